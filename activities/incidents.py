"""Opening an incident: its row (idempotent by key, its type's template and playbook applied, on the timeline and in
the audit log) and its IncidentWorkflow. The API, the web forms, alert ingestion and scheduled monitoring all open
incidents through these two functions, so an incident looks the same whoever opened it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.registry import agent_specs, known_agents
from core.agents import AgentSpec
from core.audit import Actor, record_audit
from core.collaboration import IncidentTemplate
from core.events import incident_event
from core.payloads import (
    INCIDENT_WORKFLOW,
    IncidentContext,
    IncidentWorkflowInput,
    incident_search_attributes,
    incident_workflow_id,
)
from core.playbook import Playbook, with_agent_defaults
from core.playbook_store import choose_playbook, load_playbook
from core.settings import Settings
from core.tables import DEFAULT_SEVERITY, Incident, IncidentCreate, IncidentPublic
from core.webhook_agents import WebhookAgent


def webhook_agent_names(session: Session) -> list[str]:
    """Enabled webhook agents a step runs as `webhook_agent` (never one named like a built-in or a plugin)."""
    installed = agent_specs()
    names = session.exec(select(WebhookAgent.name).where(col(WebhookAgent.enabled)))
    return sorted(name for name in names if name not in installed)


def installed_agent_specs(session: Session) -> dict[str, AgentSpec]:
    """Every agent a playbook may name: built-in, plugins and enabled webhook agents (which never shadow those)."""
    specs = agent_specs()
    for row in session.exec(select(WebhookAgent).where(col(WebhookAgent.enabled))):
        specs.setdefault(row.name, row.spec())
    return specs


CLOCK_SKEW = timedelta(seconds=2)
# How long a workflow's start may wait for Temporal's answer: a paused or unreachable Temporal is an RPCError the
# caller reports instead of a request held for ever. The row is stored first, and a start that went through unseen
# is found again ("already started") when the caller retries.
START_WORKFLOW_TIMEOUT = timedelta(seconds=10)


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
    playbook, webhooks, risks = await asyncio.to_thread(_pinned_playbook, engine, settings, incident)
    try:
        await temporal.start_workflow(
            INCIDENT_WORKFLOW,
            IncidentWorkflowInput(
                incident=context,
                playbook=playbook.model_dump(mode="json"),
                known_agents=sorted(known_agents() | set(webhooks)),
                webhook_agents=webhooks,
                retry_window_seconds=settings.retry_window_seconds,
                approval_timeout_seconds=settings.approval_timeout_seconds,
                agents_open_projection=settings.agents_open_projection,
                approvals_outlive_abort=True,
                agent_risks=risks,
                guard_changes=True,
            ),
            id=incident.workflow_id,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=incident_search_attributes(context, incident.playbook_id),
            static_summary=f"{incident.severity} {incident.service}: {incident.title}"[:200],
            rpc_timeout=START_WORKFLOW_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        if fresh and await _started_before(temporal, incident):
            raise WorkflowConflict(
                f"incident {incident.id} is new but workflow {incident.workflow_id} already exists in "
                "Temporal: this database and the Temporal history do not belong together "
                "(set WORKFLOW_ID_PREFIX to share a namespace between deployments)"
            ) from None


def _pinned_playbook(
    engine: Engine, settings: Settings, incident: Incident
) -> tuple[Playbook, list[str], dict[str, str]]:
    """The incident's playbook, each step at least as risky as its agent (versions stored before that rule may say
    less), the webhook agents, and each agent's risk."""
    with Session(engine) as session:
        playbook = load_playbook(
            session=session,
            settings=settings,
            playbook_id=incident.playbook_id,
            version=incident.playbook_version,
        )
        specs = installed_agent_specs(session)
        risks: dict[str, str] = {name: spec.default_risk for name, spec in specs.items()}
        return with_agent_defaults(playbook, specs), webhook_agent_names(session), risks


async def _started_before(temporal: Client, incident: Incident) -> bool:
    """Whether the existing workflow predates this incident row (so it belongs to another database).

    A workflow started after the row by a concurrent duplicate request of the same incident is ours.
    """
    assert incident.workflow_id is not None
    description = await temporal.get_workflow_handle(incident.workflow_id).describe(rpc_timeout=START_WORKFLOW_TIMEOUT)
    return description.start_time < incident.created_at - CLOCK_SKEW
