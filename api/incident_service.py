"""Incident service functions: creation (row + workflow start) and reads of the projected state."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.schemas import IncidentDetail, IncidentPublic, StepPublic, WorkflowPublic
from core.audit import Actor, record_audit
from core.payloads import (
    IncidentContext,
    IncidentWorkflowInput,
    incident_search_attributes,
    incident_workflow_id,
)
from core.playbooks import DEFAULT_PLAYBOOK_ID
from core.settings import Settings
from core.tables import Incident, IncidentCreate, WorkflowRun, WorkflowStep
from workflows.incident import IncidentWorkflow


class IncidentNotFound(LookupError):
    pass


CLOCK_SKEW = timedelta(seconds=2)


class WorkflowConflict(RuntimeError):
    """A new incident's workflow id already exists in Temporal (history from another database)."""


def insert_incident(
    *,
    session: Session,
    data: IncidentCreate,
    idempotency_key: str | None,
    actor: Actor,
    workflow_id_prefix: str = "incident-",
) -> tuple[Incident, bool]:
    """Store the incident, or return the one stored under the same idempotency key: (incident, created)."""
    if idempotency_key:
        existing = session.exec(select(Incident).where(Incident.idempotency_key == idempotency_key)).first()
        if existing is not None:
            return existing, False
    incident = Incident.model_validate(
        data, update={"idempotency_key": idempotency_key, "playbook_id": DEFAULT_PLAYBOOK_ID}
    )
    session.add(incident)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with its incident.
        session.rollback()
        existing = session.exec(select(Incident).where(Incident.idempotency_key == idempotency_key)).one()
        return existing, False
    assert incident.id is not None
    incident.workflow_id = incident_workflow_id(incident.id, workflow_id_prefix)
    record_audit(
        session,
        actor=actor,
        action="incident.create",
        target_type="incident",
        target_id=incident.id,
        after=IncidentPublic.model_validate(incident, from_attributes=True).model_dump(mode="json"),
    )
    session.commit()
    session.refresh(incident)
    return incident, True


async def start_incident_workflow(
    *, temporal: Client, incident: Incident, settings: Settings, fresh: bool
) -> None:
    """Start IncidentWorkflow `incident-<id>`; for a repeated request, already started is success."""
    assert incident.id is not None and incident.workflow_id is not None
    context = IncidentContext(
        incident_id=incident.id,
        title=incident.title,
        service=incident.service,
        severity=incident.severity,
        incident_type=incident.incident_type,
        service_url=incident.service_url,
    )
    try:
        await temporal.start_workflow(
            IncidentWorkflow.run,
            IncidentWorkflowInput(
                incident=context,
                playbook_id=incident.playbook_id,
                recheck_count=settings.verify_checks,
                recheck_interval_seconds=settings.verify_interval_seconds,
            ),
            id=incident.workflow_id,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=incident_search_attributes(context, incident.playbook_id),
            static_summary=f"{incident.severity} {incident.service}: {incident.title}"[:200],
        )
    except WorkflowAlreadyStartedError:
        if fresh and await _started_before(temporal, incident):
            raise WorkflowConflict(
                f"incident {incident.id} is new but workflow {incident.workflow_id} already exists in "
                "Temporal: this database and the Temporal history do not belong together "
                "(set WORKFLOW_ID_PREFIX to share a namespace between deployments)"
            ) from None


async def _started_before(temporal: Client, incident: Incident) -> bool:
    """Whether the existing workflow predates this incident row (so it belongs to another database).

    A workflow started after the row by a concurrent duplicate request of the same incident is ours.
    """
    assert incident.workflow_id is not None
    description = await temporal.get_workflow_handle(incident.workflow_id).describe()
    return description.start_time < incident.created_at - CLOCK_SKEW


def get_incident(*, session: Session, incident_id: int) -> Incident:
    """The incident row, or IncidentNotFound."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound(f"incident {incident_id} does not exist")
    return incident


def temporal_ui_link(*, ui_url: str, namespace: str, workflow_id: str) -> str:
    return f"{ui_url}/namespaces/{quote(namespace)}/workflows/{quote(workflow_id)}"


def incident_detail(*, session: Session, incident: Incident, ui_url: str, namespace: str) -> IncidentDetail:
    """The incident with its projected workflow status and steps."""
    workflow = None
    if incident.workflow_id:
        run = session.get(WorkflowRun, incident.workflow_id)
        steps = session.exec(
            select(WorkflowStep)
            .where(WorkflowStep.workflow_id == incident.workflow_id)
            .order_by(col(WorkflowStep.position))
        ).all()
        workflow = WorkflowPublic(
            workflow_id=incident.workflow_id,
            status=run.status if run else "pending",
            current_steps=run.current_steps if run else [],
            error=run.error if run else None,
            started_at=run.started_at if run else None,
            finished_at=run.finished_at if run else None,
            temporal_ui_url=temporal_ui_link(
                ui_url=ui_url, namespace=namespace, workflow_id=incident.workflow_id
            ),
            steps=[StepPublic.model_validate(step, from_attributes=True) for step in steps],
        )
    return IncidentDetail(
        **IncidentPublic.model_validate(incident, from_attributes=True).model_dump(), workflow=workflow
    )


def list_incidents(
    *,
    session: Session,
    status: str | None,
    severity: str | None,
    service: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Incident], int]:
    """Newest first, filtered; returns (page, total)."""
    query = select(Incident)
    if status:
        query = query.where(Incident.status == status)
    if severity:
        query = query.where(Incident.severity == severity)
    if service:
        query = query.where(Incident.service == service)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Incident.id).desc()).limit(limit).offset(offset)).all()
    return list(rows), total
