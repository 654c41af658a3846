"""Dry runs of a playbook: its version run as a real Temporal workflow in simulation mode (PlaybookDryRunWorkflow,
workflows/incident/dry_run.py) over a past incident's context (read, never changed) or a sample one, stored in
`playbook_dry_runs` with its state and report. Never an incident: no incident, workflow projection, conversation,
approval, remediation record, escalation or notification is written by one (tests/workflows/test_dry_run.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from core.audit import Actor, record_audit
from core.dry_run import DRY_RUN_WORKFLOW, DryRunInput, dry_run_search_attributes, dry_run_workflow_id
from core.dry_run_report import ENDED
from core.errors import Conflict, Invalid, NotFound, Unavailable
from core.payloads import IncidentContext, IncidentWorkflowInput
from core.playbook import Playbook, with_agent_defaults
from core.playbook_store import BUILTIN_VERSION, load_playbook
from core.playbook_vars import VariableSpec, variable_context
from core.settings import Settings
from core.tables import Incident, PlaybookDryRun, Severity, utcnow
from services.incidents.start import (
    START_WORKFLOW_TIMEOUT,
    agents_of,
    start_failure,
    with_declared_remediation,
)
from services.playbook_sharing import check_view

RECENT = 20


class DryRunNotFound(NotFound):
    pass


class DryRunConflict(Conflict):
    """The new dry run's workflow id already exists in Temporal (history from another database)."""


class DryRunSample(BaseModel):
    """The incident a dry run pretends to handle when it is not made from a past one."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="Dry run", min_length=1, max_length=200)
    service: str = Field(default="example", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    severity: Severity = "P3"
    incident_type: str | None = Field(default=None, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    service_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s/?#]+\S*$")

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title must not be blank")
        return value.strip()


def _context(
    session: Session, incident_id: int | None, sample: DryRunSample | None, playbook: Playbook
) -> IncidentContext:
    """A past incident's context (read only), or the sample's (incident id 0: no incident)."""
    if incident_id is not None:
        incident = session.get(Incident, incident_id)
        if incident is None or incident.id is None:
            raise Invalid(f"incident_id: incident {incident_id} does not exist")
        return IncidentContext(
            incident_id=incident.id,
            title=incident.title,
            service=incident.service,
            severity=incident.severity,
            incident_type=incident.incident_type,
            service_url=incident.service_url,
        )
    sample = sample or DryRunSample()
    return IncidentContext(
        incident_id=0,
        title=sample.title,
        service=sample.service,
        severity=sample.severity,
        incident_type=sample.incident_type or playbook.incident_type,
        service_url=sample.service_url,
    )


def with_variables(playbook: Playbook, context: IncidentContext, overrides: dict[str, Any]) -> Playbook:
    """The playbook with the overrides as its variables' values (typed, each one declared: Invalid naming
    `variables.vars.x` otherwise), so `${…}`, `{{…}}` and `when` read them exactly as a run reads its variables."""
    try:
        values = variable_context(playbook, asdict(context), overrides)
    except ValueError as err:
        raise Invalid(f"variables.{err}") from None
    variables: dict[str, Any] = {}
    for name, declared in playbook.variables.items():
        value = values[name]
        variables[name] = (
            declared.model_copy(update={"default": value}) if isinstance(declared, VariableSpec) else value
        )
    return playbook.model_copy(update={"variables": variables})


def _pinned(
    session: Session, settings: Settings, playbook: Playbook, context: IncidentContext
) -> IncidentWorkflowInput:
    """The run as an incident's would start (services/incidents/start.py), with no retry window and no escalation:
    a dry run never waits for a person."""
    if playbook.id == "default" and playbook.version == BUILTIN_VERSION:
        playbook = with_declared_remediation(session, playbook, context.service)
    specs, webhooks = agents_of(session)
    return IncidentWorkflowInput(
        incident=context,
        playbook=with_agent_defaults(playbook, specs).model_dump(mode="json"),
        known_agents=sorted(set(specs) | set(webhooks)),
        webhook_agents=webhooks,
        retry_window_seconds=0,
        approval_timeout_seconds=settings.approval_timeout_seconds,
        agents_open_projection=False,
        approvals_outlive_abort=True,
        agent_risks={name: spec.default_risk for name, spec in specs.items()},
        guard_changes=True,
        unapproved_fails=True,
        escalation=[],
        waits_for_infrastructure=False,
    )


def _existing(session: Session, actor: Actor, key: str) -> PlaybookDryRun | None:
    # Serialises requests with the same key: the row is looked up and inserted under the lock.
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"dry-run:{key}"})
    return session.exec(
        select(PlaybookDryRun).where(
            PlaybookDryRun.sample["idempotency_key"].astext == key,
            PlaybookDryRun.created_by == actor.name,
        )
    ).first()


def _record(
    session: Session,
    *,
    settings: Settings,
    actor: Actor,
    principal: Any,
    playbook_id: str,
    version: int | None,
    variables: dict[str, Any],
    incident_id: int | None,
    sample: DryRunSample | None,
    idempotency_key: str | None,
) -> tuple[PlaybookDryRun, DryRunInput | None]:
    """The dry run's row (committed) and what to start it with; None: an earlier request with the same key made it."""
    if idempotency_key:
        existing = _existing(session, actor, idempotency_key)
        if existing is not None:
            return existing, None
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    context = _context(session, incident_id, sample, playbook)
    playbook = with_variables(playbook, context, variables)
    run = _pinned(session, settings, playbook, context)
    row = PlaybookDryRun(
        workflow_id=f"pending-{uuid4().hex}",  # its id is known once inserted
        playbook_id=playbook.id,
        playbook_version=playbook.version,
        status="running",
        variables=dict(variables),
        sample={
            "incident": asdict(context),
            "incident_id": incident_id,
            "source": f"incident #{incident_id}" if incident_id is not None else "sample",
            **({"idempotency_key": idempotency_key} if idempotency_key else {}),
        },
        created_by=actor.name[:100],
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    row.workflow_id = dry_run_workflow_id(row.id, settings.workflow_id_prefix)
    record_audit(
        session,
        actor=actor,
        action="playbook.dry_run",
        target_type="playbook",
        target_id=playbook.id,
        after={"dry_run_id": row.id, "version": playbook.version, "variables": variables, "incident_id": incident_id},
    )
    session.commit()
    session.refresh(row)
    return row, DryRunInput(run=run, dry_run_id=row.id)


async def start_dry_run_once(
    *,
    engine: Engine,
    temporal: Client,
    settings: Settings,
    actor: Actor,
    playbook_id: str,
    version: int | None = None,
    variables: dict[str, Any] | None = None,
    incident_id: int | None = None,
    sample: DryRunSample | None = None,
    idempotency_key: str | None = None,
    principal: Any = None,
) -> tuple[PlaybookDryRun, bool]:
    """Record a dry run of the playbook (the latest version, or `version`) and start its workflow `dry-run-<id>`.
    Invalid (422) names the field; a playbook the principal may not see is not found; Temporal not answering is
    Unavailable (the row says so). A repeat with the same idempotency key answers the first dry run (and False:
    not made by this call)."""

    def record(session: Session) -> tuple[PlaybookDryRun, DryRunInput | None]:
        return _record(
            session,
            settings=settings,
            actor=actor,
            principal=principal,
            playbook_id=playbook_id,
            version=version,
            variables=dict(variables or {}),
            incident_id=incident_id,
            sample=sample,
            idempotency_key=idempotency_key,
        )

    row, start = await asyncio.to_thread(_in_session, engine, record)
    if start is None:
        return row, False
    try:
        await temporal.start_workflow(
            DRY_RUN_WORKFLOW,
            start,
            id=row.workflow_id,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=dry_run_search_attributes(start.run.incident, row.playbook_id),
            static_summary=f"DRY RUN of playbook {row.playbook_id} v{row.playbook_version}"[:200],
            rpc_timeout=START_WORKFLOW_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        why = (
            f"workflow {row.workflow_id} already exists in Temporal: this database and that history do not belong "
            "together (set WORKFLOW_ID_PREFIX to share a namespace between deployments)"
        )
        await asyncio.to_thread(_in_session, engine, lambda s: _start_failed(s, row.id, why))
        raise DryRunConflict(f"the dry run was recorded but did not start: {why}") from None
    except RPCError as err:
        why = start_failure(err)
        await asyncio.to_thread(_in_session, engine, lambda s: _start_failed(s, row.id, why))
        raise Unavailable(f"the dry run was recorded but did not start: {why}") from None
    return row, True


async def start_dry_run(**kwargs: Any) -> PlaybookDryRun:
    """start_dry_run_once's dry run (the same keyword arguments), without saying whether this call made it."""
    row, _ = await start_dry_run_once(**kwargs)
    return row


def _start_failed(session: Session, dry_run_id: int | None, why: str) -> None:
    row = session.get(PlaybookDryRun, dry_run_id)
    if row is not None:
        row.status, row.finished_at = "failed", utcnow()
        row.report = {"dry_run": True, "status": "failed", "error": f"not started: {why}", "steps": [], "summary": {}}
        session.commit()


def _in_session(engine: Engine, work: Any) -> Any:
    with Session(engine, expire_on_commit=False) as session:
        return work(session)


def get_dry_run(*, session: Session, dry_run_id: int, principal: Any = None) -> PlaybookDryRun:
    """One dry run (DryRunNotFound when it does not exist, or the principal may not see its playbook)."""
    row = session.get(PlaybookDryRun, dry_run_id)
    if row is None:
        raise DryRunNotFound(f"dry run {dry_run_id} does not exist")
    try:
        check_view(session=session, principal=principal, playbook_id=row.playbook_id)
    except NotFound:
        raise DryRunNotFound(f"dry run {dry_run_id} does not exist") from None
    return row


def list_dry_runs(
    *, session: Session, playbook_id: str, principal: Any = None, limit: int = RECENT
) -> list[PlaybookDryRun]:
    """The playbook's most recent dry runs, newest first."""
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    query = (
        select(PlaybookDryRun)
        .where(PlaybookDryRun.playbook_id == playbook_id)
        .order_by(col(PlaybookDryRun.id).desc())
        .limit(limit)
    )
    return list(session.exec(query).all())


def dry_run_public(row: PlaybookDryRun) -> dict[str, Any]:
    """What the API answers for a dry run (`report.steps` says per step what would have happened)."""
    return {
        "id": row.id,
        "dry_run": True,
        "url": f"/dry-runs/{row.id}",
        "workflow_id": row.workflow_id,
        "playbook_id": row.playbook_id,
        "playbook_version": row.playbook_version,
        "status": row.status,
        "ended": row.status in ENDED,
        "variables": row.variables,
        "incident": (row.sample or {}).get("incident"),
        "source": (row.sample or {}).get("source"),
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "report": row.report,
        "state": row.state,
    }
