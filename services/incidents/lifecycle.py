"""The incident state machine, and what reopening does to the incident's playbook run."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from core.audit import Actor, record_audit
from core.db import on_pool, session_scope
from core.errors import Conflict
from core.events import incident_event
from core.payloads import AbortInput, RetryStepInput, incident_workflow_id
from core.settings import Settings
from core.tables import INCIDENT_TRANSITIONS, Incident, WorkflowRun, utcnow
from services.collaboration import template_for
from services.incidents.detail import IncidentNotFound
from services.incidents.start import start_incident_workflow


class TransitionRefused(Conflict):
    """The state machine does not allow the move (a 409)."""


@dataclass
class Transition:
    incident: Incident
    reopen_action: str | None  # restart | resume | none, when the incident was reopened
    previous_workflow_id: str | None


def transition(
    *, engine: Engine, incident_id: int, target: str, comment: str, actor: Actor, settings: Settings
) -> Transition:
    """Apply one move of the state machine under a row lock, so concurrent moves cannot both pass."""
    with session_scope(engine) as session:
        incident = session.exec(select(Incident).where(Incident.id == incident_id).with_for_update()).first()
        if incident is None:
            raise IncidentNotFound(f"incident {incident_id} does not exist")
        allowed = INCIDENT_TRANSITIONS.get(incident.status, ())
        if target not in allowed:
            raise TransitionRefused(
                f"incident {incident_id} is {incident.status}: it can go to {', '.join(allowed) or 'nothing'}, "
                f"not {target}"
            )
        before, now = incident.status, utcnow()
        incident.status, incident.updated_at = target, now
        if target == "in_progress" and incident.acknowledged_at is None:
            incident.acknowledged_at = now
        elif target == "resolved":
            incident.resolved_at = now
        elif target == "closed":
            incident.closed_at = now
        reopen_action, previous = None, incident.workflow_id
        if target == "reopened":
            incident.resolved_at = incident.closed_at = None
            template = template_for(session=session, incident_type=incident.incident_type)
            reopen_action = template.on_reopen if template else "restart"
            if reopen_action == "resume" and not _failed_and_waiting(session, previous):
                reopen_action = "restart"
            if reopen_action == "restart":
                _next_run(incident, settings)
        session.add(incident)
        incident_event(
            session,
            kind="incident.status",
            incident_id=incident_id,
            actor=actor.name,
            status=target,
            previous=before,
            comment=comment,
            playbook=reopen_action,
        )
        record_audit(
            session,
            actor=actor,
            action="incident.status",
            target_type="incident",
            target_id=incident_id,
            before={"status": before},
            after={"status": target, "comment": comment, "playbook": reopen_action},
        )
        session.commit()
        session.refresh(incident)
        session.expunge(incident)
        return Transition(incident, reopen_action, previous)


async def move(
    *, engine: Engine, incident_id: int, target: str, comment: str, actor: Actor, settings: Settings
) -> Transition:
    """transition, in a worker thread once the pool has a connection for it (core.db.on_pool)."""
    work = partial(
        transition, engine=engine, incident_id=incident_id, target=target, comment=comment, actor=actor,
        settings=settings,
    )  # fmt: skip
    return await on_pool(engine, work)


async def acknowledged(*, engine: Engine, incident_id: int, actor: Actor) -> tuple[Incident, bool]:
    """acknowledge, in a worker thread once the pool has a connection for it (core.db.on_pool)."""
    return await on_pool(engine, partial(acknowledge, engine=engine, incident_id=incident_id, actor=actor))


def acknowledge(*, engine: Engine, incident_id: int, actor: Actor) -> tuple[Incident, bool]:
    """A person says they have it: `acknowledged_at` is set once (the first acknowledgement is kept; a repeat is
    answered as it is, not an error). Only people acknowledge: a workflow starting work does not. Returns
    (incident, whether this call acknowledged it)."""
    with session_scope(engine) as session:
        incident = session.exec(select(Incident).where(Incident.id == incident_id).with_for_update()).first()
        if incident is None:
            raise IncidentNotFound(f"incident {incident_id} does not exist")
        if incident.status in ("resolved", "closed"):
            raise TransitionRefused(f"incident {incident_id} is {incident.status}: there is nothing to acknowledge")
        first = incident.acknowledged_at is None
        if first:
            incident.acknowledged_at = incident.updated_at = utcnow()
            session.add(incident)
            incident_event(session, kind="incident.acknowledged", incident_id=incident_id, actor=actor.name)
            record_audit(
                session,
                actor=actor,
                action="incident.acknowledge",
                target_type="incident",
                target_id=incident_id,
                after={"acknowledged_at": incident.acknowledged_at.isoformat()},
            )
        session.commit()
        session.refresh(incident)
        session.expunge(incident)
        return incident, first


def _next_run(incident: Incident, settings: Settings) -> None:
    """Point the incident at a new run of its playbook: `incident-<id>-run<n>`."""
    assert incident.id is not None
    incident.workflow_runs += 1
    incident.workflow_id = (
        f"{incident_workflow_id(incident.id, settings.workflow_id_prefix)}-run{incident.workflow_runs}"
    )


def _restart_instead(*, engine: Engine, moved: Transition, settings: Settings) -> Transition:
    """The run to resume ended after the reopen looked at it: the incident gets a new run instead."""
    with session_scope(engine) as session:
        incident = session.exec(select(Incident).where(Incident.id == moved.incident.id).with_for_update()).one()
        if incident.workflow_id == moved.previous_workflow_id:  # not already moved on by someone else
            _next_run(incident, settings)
            session.add(incident)
        session.commit()
        session.refresh(incident)
        session.expunge(incident)
    return Transition(incident, "restart", moved.previous_workflow_id)


def _failed_and_waiting(session: Session, workflow_id: str | None) -> bool:
    """Whether the run failed and still waits for a retry (resumable) rather than having ended."""
    run = session.get(WorkflowRun, workflow_id) if workflow_id else None
    return run is not None and run.status == "failed" and run.finished_at is None


async def act_on_playbook(
    *, temporal: Client, engine: Engine, settings: Settings, moved: Transition, actor: Actor
) -> None:
    """Reopen → restart: end the previous run if it is still open, start a fresh one; → resume: retry the
    failed step of the waiting run. Raises RPCError when Temporal cannot be reached."""
    if moved.reopen_action == "resume" and moved.previous_workflow_id:
        handle = temporal.get_workflow_handle(moved.previous_workflow_id)
        try:
            await handle.execute_update("retry_step", RetryStepInput(actor=actor.name, origin=actor.origin()))
            return
        except WorkflowUpdateFailedError:
            # It stopped waiting for a retry in the meantime: someone else's retry runs it, or it ended.
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                return
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: the run has already ended
                raise
        # Nothing left to resume: restart, as for a run that had ended before the reopen.
        moved = await on_pool(engine, partial(_restart_instead, engine=engine, moved=moved, settings=settings))
    if moved.reopen_action == "restart":
        if moved.previous_workflow_id:
            await _end_if_open(temporal, moved.previous_workflow_id, actor)
        await start_incident_workflow(
            temporal=temporal, engine=engine, incident=moved.incident, settings=settings, fresh=False
        )


async def _end_if_open(temporal: Client, workflow_id: str, actor: Actor) -> None:
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return
        raise
    if description.status == WorkflowExecutionStatus.RUNNING:
        await handle.signal(
            "abort_signal",
            AbortInput(reason="incident reopened: playbook restarted", actor=actor.name, origin=actor.origin()),
        )
