"""Incident service functions: creation (row + workflow start) and reads of the projected state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar
from urllib.parse import quote

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.registry import known_agents
from api.agent_service import webhook_agent_names
from api.collaboration_service import links_of
from api.errors import NotFound
from api.playbook_service import choose_playbook, load_playbook
from api.schemas import IncidentDetail, IncidentPublic, LinkPublic, StepPublic, WorkflowPublic
from core.audit import Actor, record_audit
from core.collaboration import IncidentTemplate
from core.db import session_scope
from core.events import incident_event
from core.identity import Team, User
from core.payloads import (
    IncidentContext,
    IncidentWorkflowInput,
    incident_search_attributes,
    incident_workflow_id,
)
from core.playbook import Playbook
from core.settings import Settings
from core.tables import DEFAULT_SEVERITY, Incident, IncidentCreate, WorkflowRun, WorkflowStep, utcnow
from workflows.incident import IncidentWorkflow


class IncidentNotFound(NotFound):
    pass


T = TypeVar("T")


async def in_session(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run `work` in a worker thread with a session that commits, and give the connection back before returning.

    A sync route holding its SessionDep connection until the response is validated (another threadpool hop)
    deadlocks once every thread waits for the pool and every pooled connection waits for a thread; routes
    that many clients hit at once use this instead.
    """

    def run() -> T:
        with session_scope(engine) as session:
            return work(session)

    return await run_in_threadpool(run)


CLOCK_SKEW = timedelta(seconds=2)


class WorkflowConflict(RuntimeError):
    """A new incident's workflow id already exists in Temporal (history from another database)."""


def insert_incident(
    *,
    session: Session,
    data: IncidentCreate,
    idempotency_key: str | None,
    actor: Actor,
    settings: Settings,
) -> tuple[Incident, bool]:
    """Store the incident, or return the one stored under the same idempotency key: (incident, created)."""
    if idempotency_key:
        existing = session.exec(select(Incident).where(Incident.idempotency_key == idempotency_key)).first()
        if existing is not None:
            return existing, False
    # The type's template fills in what the caller left out: severity, description, playbook.
    template = session.get(IncidentTemplate, data.incident_type)
    playbook = choose_playbook(
        session=session,
        settings=settings,
        incident_type=data.incident_type,
        playbook_id=data.playbook_id or (template.playbook_id if template else None),
    )
    incident = Incident.model_validate(
        data.model_dump(exclude={"playbook_id"}),
        update={
            "severity": data.severity or (template.default_severity if template else DEFAULT_SEVERITY),
            "description": data.description or (template.description if template else ""),
            "idempotency_key": idempotency_key,
            "playbook_id": playbook.id,
            "playbook_version": playbook.version,
        },
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
    incident.workflow_id = incident_workflow_id(incident.id, settings.workflow_id_prefix)
    incident_event(
        session,
        kind="incident.created",
        incident_id=incident.id,
        actor=actor.name,
        status=incident.status,
        severity=incident.severity,
        title=incident.title,
        service=incident.service,
    )
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
    *, temporal: Client, engine: Engine, incident: Incident, settings: Settings, fresh: bool
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
    playbook = await run_in_threadpool(_pinned_playbook, engine, settings, incident)
    webhooks = await run_in_threadpool(_webhook_agents, engine)
    try:
        await temporal.start_workflow(
            IncidentWorkflow.run,
            IncidentWorkflowInput(
                incident=context,
                playbook=playbook.model_dump(mode="json"),
                known_agents=sorted(known_agents() | set(webhooks)),
                webhook_agents=webhooks,
                retry_window_seconds=settings.retry_window_seconds,
                approval_timeout_seconds=settings.approval_timeout_seconds,
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


def _webhook_agents(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return webhook_agent_names(session)


def _pinned_playbook(engine: Engine, settings: Settings, incident: Incident) -> Playbook:
    with Session(engine) as session:
        return load_playbook(
            session=session,
            settings=settings,
            playbook_id=incident.playbook_id,
            version=incident.playbook_version,
        )


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
        # The workflow row and the incident it moves are written in one statement; re-reading the incident
        # after the run means a completed run is never shown beside a not-yet-resolved incident.
        session.refresh(incident)
        steps = session.exec(
            select(WorkflowStep)
            .where(WorkflowStep.workflow_id == incident.workflow_id)
            .order_by(col(WorkflowStep.position))
        ).all()
        workflow = WorkflowPublic(
            workflow_id=incident.workflow_id,
            status=run.status if run else "pending",
            # Agents record their own steps, so the step rows are the fresher source of what runs now.
            current_steps=[step.step_id for step in steps if step.status == "running"],
            error=run.error if run else None,
            started_at=run.started_at if run else None,
            finished_at=run.finished_at if run else None,
            temporal_ui_url=temporal_ui_link(ui_url=ui_url, namespace=namespace, workflow_id=incident.workflow_id),
            steps=[StepPublic.model_validate(step, from_attributes=True) for step in steps],
        )
    assert incident.id is not None
    links = [
        LinkPublic(
            id=link.id or 0,
            kind=kind,
            incident_id=other.id or 0,
            title=other.title,
            status=other.status,
            severity=other.severity,
        )
        for link, kind, other in links_of(session=session, incident_id=incident.id)
    ]
    return IncidentDetail(
        **IncidentPublic.model_validate(incident, from_attributes=True).model_dump(), workflow=workflow, links=links
    )


def detail_for(*, session: Session, incident: Incident, settings: Settings) -> IncidentDetail:
    """incident_detail with the Temporal UI link built from settings."""
    return incident_detail(
        session=session,
        incident=incident,
        ui_url=settings.effective_temporal_ui_url,
        namespace=settings.temporal_namespace,
    )


class AssigneeNotFound(ValueError):
    pass


def assign(*, session: Session, incident: Incident, user_id: int | None, team_id: int | None, actor: Actor) -> None:
    """Assign the incident to a user and/or a team (None unassigns); on the timeline and in the audit log."""
    user = session.get(User, user_id) if user_id is not None else None
    if user_id is not None and (user is None or not user.is_active):
        raise AssigneeNotFound(f"user_id: user {user_id} does not exist")
    team = session.get(Team, team_id) if team_id is not None else None
    if team_id is not None and team is None:
        raise AssigneeNotFound(f"team_id: team {team_id} does not exist")
    assert incident.id is not None
    before = {"assignee_user_id": incident.assignee_user_id, "assignee_team_id": incident.assignee_team_id}
    incident.assignee_user_id, incident.assignee_team_id = user_id, team_id
    incident.updated_at = utcnow()
    session.add(incident)
    incident_event(
        session,
        kind="incident.assigned",
        incident_id=incident.id,
        actor=actor.name,
        user=user.username if user else None,
        team=team.name if team else None,
    )
    record_audit(
        session,
        actor=actor,
        action="incident.assign",
        target_type="incident",
        target_id=incident.id,
        before=before,
        after={"assignee_user_id": user_id, "assignee_team_id": team_id},
    )
    session.commit()
    session.refresh(incident)
