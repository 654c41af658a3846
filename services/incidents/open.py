"""Opening an incident: its row (idempotent by key, its type's template and playbook applied, on the timeline and in
the audit log) and its IncidentWorkflow.

`open_incident()` is the one way in: the API, the new-incident form and scheduled monitoring call it, so an
incident looks the same, and fails the same way, whoever opened it. Its two halves are `insert_incident()` (the
only INSERT of an incident) and `start_incident_workflow()` (the only start of an IncidentWorkflow): alert
ingestion stores each alert's incident inside its own deduplication transaction and starts the batch's
workflows afterwards, and a reopen starts a fresh run of an existing incident.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.service import RPCError

from core.audit import Actor, record_audit
from core.db import on_pool
from core.errors import Invalid, Unavailable
from core.events import incident_event
from core.opening import Join, OnCreated, Opened, Reopen
from core.outbound import BlockedTarget, OutboundPolicy, check_url
from core.payloads import (
    incident_workflow_id,
)
from core.playbook_store import PlaybookNotFound
from core.settings import Settings
from core.tables import DEFAULT_SEVERITY, Incident, IncidentCreate, IncidentPublic
from services.incidents.lifecycle import TransitionRefused, act_on_playbook, move
from services.incidents.run_config import RunConfig, read_run_config
from services.incidents.start import (
    Pinned,
    pin,
    start_failure,
    start_incident_workflow,
)

log = logging.getLogger(__name__)


class UnsafeServiceUrl(Invalid):
    """A service_url the SSRF guard refuses; str() is "service_url: <why>"."""


class IncidentNotStarted(Unavailable):
    """The incident is stored but Temporal did not start its workflow; the worker's reconciler starts it when Temporal
    is back (services/incidents/reconcile.py), and the same request (same key) may retry meanwhile."""

    def __init__(self, incident_id: int, reason: str) -> None:
        super().__init__(
            f"incident {incident_id} is recorded but its workflow could not start yet ({reason}); it will start by "
            "itself when Temporal is back (sending the request again records another incident, unless it carries "
            "the same Idempotency-Key)"
        )
        self.incident_id = incident_id
        self.reason = reason


def check_service_url(*, service_url: str | None, settings: Settings) -> None:
    """Refuse, before anything is stored, a service_url agents could never be allowed to reach (the SSRF guard's
    write-time rules, as for a service's check URL); host names are checked again when agents connect."""
    if not service_url:
        return
    try:
        check_url(service_url, OutboundPolicy.from_settings(settings))
    except BlockedTarget as err:
        raise UnsafeServiceUrl(f"service_url: {err}") from None


async def open_incident(
    *,
    engine: Engine,
    temporal: Client,
    settings: Settings,
    data: IncidentCreate,
    actor: Actor,
    idempotency_key: str | None = None,
    playbook_fallback: bool = False,
    reopen: Reopen | None = None,
    join: Join | None = None,
    on_created: OnCreated | None = None,
) -> Opened:
    """Store the incident and start its workflow, in one session and with the playbook loaded once.

    A repeat of the same `idempotency_key` answers the stored incident (created False) and starts its workflow if an
    earlier attempt did not get that far; an ended incident `reopen` finds is reopened (the state machine's move,
    and its playbook restarted or resumed as its type says); an incident `join` finds is answered as it is (its
    opener runs it).
    Raises UnsafeServiceUrl or Invalid (`playbook_id: …`, unless `playbook_fallback` runs the type's playbook
    instead), WorkflowConflict (409) and IncidentNotStarted (503: stored, not started).
    """
    check_service_url(service_url=data.service_url, settings=settings)

    def store() -> tuple[Incident, bool, Pinned | None, str | None]:
        with Session(engine, expire_on_commit=False) as session:
            ended = reopen(session) if reopen is not None else None
            if ended is not None:
                return ended[0], False, None, ended[1]
            joined = join(session) if join is not None else None
            if joined is not None:
                return joined, False, None, None
            # One transaction: the incident, what on_created adds, and the reads of what its run is started with
            # (a commit before those reads cost a second checkout, BEGIN and ROLLBACK per create).
            incident, created, config = _insert_or_fallback(
                session, data, idempotency_key, actor, settings, fallback=playbook_fallback
            )
            if created and on_created is not None:
                on_created(session, incident)
            ours = created or (idempotency_key is not None and incident.idempotency_key == idempotency_key)
            pinned = pin(session, settings, incident, config) if ours else None
            session.commit()
            return incident, created, pinned, None

    incident, created, pinned, why = await on_pool(engine, store)
    if why is not None:
        return await _reopen(engine=engine, temporal=temporal, settings=settings, incident=incident, why=why,
                             actor=actor)  # fmt: skip
    if pinned is not None:
        assert incident.id is not None
        try:
            await start_incident_workflow(
                temporal=temporal, engine=engine, incident=incident, settings=settings, fresh=created, pinned=pinned
            )
        except RPCError as err:
            raise IncidentNotStarted(incident.id, start_failure(err)) from err
    return Opened(incident, created)


async def _reopen(
    *, engine: Engine, temporal: Client, settings: Settings, incident: Incident, why: str, actor: Actor
) -> Opened:
    """Reopen an ended incident as a person would (the state machine's move, its type's on_reopen for the
    playbook). Someone reopened it meanwhile: it is answered as it is."""
    assert incident.id is not None
    try:
        moved = await move(
            engine=engine, incident_id=incident.id, target="reopened", comment=why, actor=actor, settings=settings
        )
    except TransitionRefused:
        return Opened(incident, False)
    try:
        await act_on_playbook(temporal=temporal, engine=engine, settings=settings, moved=moved, actor=actor)
    except RPCError as err:
        raise IncidentNotStarted(incident.id, start_failure(err)) from err
    return Opened(moved.incident, False, reopened=True)


def _insert_or_fallback(
    session: Session, data: IncidentCreate, key: str | None, actor: Actor, settings: Settings, *, fallback: bool
) -> Inserted:
    """_insert, not committed."""
    try:
        return _insert(session=session, data=data, idempotency_key=key, actor=actor, settings=settings, commit=False)
    except PlaybookNotFound as err:
        if not fallback:
            raise Invalid(f"playbook_id: {err}") from None
        # Removed since the service or route named it: the type's playbook runs instead.
        session.rollback()
        log.warning("playbook %s does not exist; incident %r runs its type's playbook", data.playbook_id, data.title)
        return _insert(
            session=session, data=data.model_copy(update={"playbook_id": None}), idempotency_key=key, actor=actor,
            settings=settings, commit=False,
        )  # fmt: skip


def insert_incident(
    *,
    session: Session,
    data: IncidentCreate,
    idempotency_key: str | None,
    actor: Actor,
    settings: Settings,
) -> tuple[Incident, bool]:
    """Store the incident, or return the one stored under the same idempotency key: (incident, created)."""
    incident, created, _ = _insert(
        session=session, data=data, idempotency_key=idempotency_key, actor=actor, settings=settings
    )
    return incident, created


# The incident, whether this call stored it, and (when it did) what it read to choose its playbook: its type's
# template, the playbook, its service and the agents (what its run is started with).
Inserted = tuple[Incident, bool, RunConfig | None]


def _insert(
    *,
    session: Session,
    data: IncidentCreate,
    idempotency_key: str | None,
    actor: Actor,
    settings: Settings,
    commit: bool = True,
) -> Inserted:
    """insert_incident, and what it read to choose the playbook when it stored a new incident (committed unless
    `commit` is False: the caller commits)."""
    if idempotency_key:
        existing = session.exec(select(Incident).where(Incident.idempotency_key == idempotency_key)).first()
        if existing is not None:
            return existing, False, None
    # The type's template fills in what the caller left out: severity, description, playbook.
    config = read_run_config(
        session, settings, incident_type=data.incident_type, playbook_id=data.playbook_id, service=data.service
    )
    template, playbook = config.template, config.playbook
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
        return existing, False, None
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
    if not commit:
        return incident, True, config
    session.commit()
    if session.expire_on_commit:  # else every field is still loaded: all of them are set here, none by Postgres
        session.refresh(incident)
    return incident, True, config
