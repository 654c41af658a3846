"""Alert ingestion: route each alert, attach it to the open incident of its (source, fingerprint) or open a new
incident through the same path as POST /api/incidents, and record resolved notifications on their incident.

Deduplication. An alert's incidents are numbered episodes: a firing alert with no open incident opens episode
n + 1 (n: the incidents it is attached to already) under the Idempotency-Key `alert:<source>:<hash>:<n + 1>`, so
concurrent identical notifications all compute the same key and insert_incident gives every one of them the
same incident. The alert's row is then upserted (unique per source, fingerprint and incident) under a row lock:
only the request that changes its status writes the timeline event and the agents' message. An alert repeated as
is, one right after the other in one notification, is recorded once and counted as many times: the same rows, events
and answers as one at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from dataclasses import dataclass
from functools import partial

from pydantic import ValidationError
from sqlalchemy import Engine, func
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from core.alerts import (
    AlertRoute,
    AlertRouteCreate,
    IncidentAlert,
    ReceivedAlert,
    Routed,
    alert_description,
    alert_title,
    firing_message,
    resolved_message,
    route_alert,
)
from core.audit import Actor
from core.conversations import append_tool_message
from core.db import on_pool, session_scope
from core.errors import Unavailable
from core.events import incident_event
from core.settings import Settings
from core.tables import ENDED_STATUSES, Incident, IncidentCreate, WorkflowRun, utcnow
from services.alert_payloads import AlertOutcome, AlertsAccepted
from services.incidents.detail import in_session
from services.incidents.open import insert_incident
from services.incidents.start import Pinned, pin, start_incident_workflow
from services.playbooks import PlaybookNotFound

log = logging.getLogger(__name__)


class WorkflowsNotStarted(Unavailable):
    """Incidents were recorded but Temporal could not start their workflows (a 503: the sender retries)."""


def load_rules(session: Session) -> list[tuple[int, AlertRouteCreate]]:
    """The enabled routing rules as (id, rule), first to try first."""
    rows = session.exec(
        select(AlertRoute).where(col(AlertRoute.enabled)).order_by(col(AlertRoute.priority), col(AlertRoute.id))
    )
    rules = []
    for row in rows:
        try:
            rules.append((row.id or 0, row.rule()))
        except ValidationError:  # stored before a limit changed: skipping it beats refusing every alert
            log.warning("alert route %s is no longer valid; it is skipped", row.name)
    return rules


def episode_key(alert: ReceivedAlert, episode: int) -> str:
    digest = hashlib.sha256(f"{alert.source}\x00{alert.fingerprint}".encode()).hexdigest()[:40]
    return f"alert:{alert.source}:{digest}:{episode}"


def _tool_message(session: Session, incident: Incident, alert: ReceivedAlert, content: str, actor: Actor) -> None:
    """A message (role tool) the incident's agents read, as add_user_message writes an operator's."""
    assert incident.id is not None
    append_tool_message(
        session,
        incident_id=incident.id,
        workflow_id=incident.workflow_id,
        content=content,
        actor=actor.name,
        meta={"alert_source": alert.source, "fingerprint": alert.fingerprint},
    )


def _attach(
    session: Session, incident: Incident, alert: ReceivedAlert, actor: Actor, *, announce: bool = True, repeats: int = 1
) -> None:
    """Record the alert (received `repeats` times in a row) on the incident (new row, or the row updated under its
    lock); a change of its status goes on the timeline and into the conversation. The caller commits."""
    assert incident.id is not None
    now = utcnow()
    values = {
        "status": alert.status,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at if alert.status == "resolved" else None,
        "generator_url": alert.generator_url,
        "last_received_at": now,
    }
    inserted = session.execute(
        insert(IncidentAlert)
        .values(
            incident_id=incident.id,
            source=alert.source,
            fingerprint=alert.fingerprint,
            first_received_at=now,
            receive_count=repeats,
            **values,
        )
        .on_conflict_do_nothing(constraint="uq_incident_alerts_source_fingerprint_incident")
        .returning(col(IncidentAlert.id))
    ).first()
    again = False
    if inserted is None:
        row = session.exec(
            select(IncidentAlert)
            .where(
                IncidentAlert.source == alert.source,
                IncidentAlert.fingerprint == alert.fingerprint,
                IncidentAlert.incident_id == incident.id,
            )
            .with_for_update()
        ).one()
        changed, again = row.status != alert.status, True
        for name, value in values.items():
            setattr(row, name, value)
        row.receive_count += repeats
        session.add(row)
        if not changed:
            return
    if not announce:
        return
    incident_event(
        session,
        kind=f"alert.{alert.status}",
        incident_id=incident.id,
        actor=actor.name,
        source=alert.source,
        fingerprint=alert.fingerprint,
        alertname=alert.name,
        again=again,
    )
    _tool_message(session, incident, alert, firing_message(alert, again=again), actor)


@dataclass
class Firing:
    outcome: AlertOutcome
    start: Incident | None  # whose workflow to start (idempotent): a new incident, or one whose start never ran
    fresh: bool


def _open_incident(session: Session, alert: ReceivedAlert) -> Incident | None:
    return session.exec(
        select(Incident)
        .join(IncidentAlert, col(IncidentAlert.incident_id) == col(Incident.id))
        .where(
            IncidentAlert.source == alert.source,
            IncidentAlert.fingerprint == alert.fingerprint,
            col(Incident.status).not_in(ENDED_STATUSES),
        )
        .order_by(col(Incident.id).desc())
        .limit(1)
    ).first()


def _episodes(session: Session, alert: ReceivedAlert) -> int:
    return session.exec(
        select(func.count(func.distinct(IncidentAlert.incident_id))).where(
            IncidentAlert.source == alert.source, IncidentAlert.fingerprint == alert.fingerprint
        )
    ).one()


def _insert(
    session: Session, alert: ReceivedAlert, routed: Routed, key: str, settings: Settings, actor: Actor
) -> tuple[Incident, bool]:
    data = IncidentCreate(
        title=alert_title(alert),
        description=alert_description(alert),
        service=routed.service,
        severity=routed.severity,
        incident_type=routed.incident_type,
        playbook_id=routed.playbook_id,
    )
    try:
        return insert_incident(session=session, data=data, idempotency_key=key, actor=actor, settings=settings)
    except PlaybookNotFound:
        # The route's playbook was checked when the route was saved; without it the type's playbook runs.
        session.rollback()
        log.warning("alert route %s names a missing playbook %s", routed.route, routed.playbook_id)
        data.playbook_id = None
        return insert_incident(session=session, data=data, idempotency_key=key, actor=actor, settings=settings)


def record_firing(
    *, engine: Engine, alert: ReceivedAlert, routed: Routed, settings: Settings, actor: Actor, repeats: int = 1
) -> Firing:
    """Attach a firing alert (received `repeats` times in a row) to its open incident, or open the next one (see
    the module's docstring)."""
    with session_scope(engine) as session:
        for _ in range(3):
            # Count first, look second (each statement sees what was committed when it ran): a concurrent request
            # that attaches the current episode in between is then seen as open, never counted as an ended episode.
            episodes = _episodes(session, alert)
            incident = _open_incident(session, alert)
            created = False
            if incident is None:
                key = episode_key(alert, episodes + 1)
                incident, created = _insert(session, alert, routed, key, settings, actor)
                if not created and incident.status in ENDED_STATUSES:
                    # This episode's incident was stored but not its alert row (the request died in between), and
                    # it has ended since: link it quietly so it counts as an episode, then look again.
                    _attach(session, incident, alert, actor, announce=False)
                    session.commit()
                    continue
            _attach(session, incident, alert, actor, repeats=repeats)
            session.commit()
            session.refresh(incident)
            unstarted = incident.workflow_id is not None and session.get(WorkflowRun, incident.workflow_id) is None
            session.expunge(incident)
            outcome = AlertOutcome(
                incident_id=incident.id, fingerprint=alert.fingerprint, action="opened" if created else "attached"
            )
            return Firing(outcome, incident if created or unstarted else None, created)
    raise RuntimeError(f"alert {alert.source}/{alert.fingerprint}: no episode settled after three tries")


def record_resolved(*, engine: Engine, alert: ReceivedAlert, actor: Actor, repeats: int = 1) -> AlertOutcome:
    """Record a resolved notification (received `repeats` times in a row) on the alert's latest incident; one for an
    alert never seen is ignored.

    An alert's incident stays open while any of its alerts fires (the projection does not resolve it when its run
    completes): when the last one resolves and the incident's run has completed, the source resolves it."""
    with session_scope(engine) as session:
        row = session.exec(
            select(IncidentAlert)
            .where(IncidentAlert.source == alert.source, IncidentAlert.fingerprint == alert.fingerprint)
            .order_by(col(IncidentAlert.id).desc())
            .limit(1)
            .with_for_update()
        ).first()
        if row is None:
            return AlertOutcome(incident_id=None, fingerprint=alert.fingerprint, action="ignored")
        incident = session.get(Incident, row.incident_id)
        assert incident is not None and incident.id is not None
        changed, at = row.status != "resolved", alert.ends_at or utcnow()
        row.status, row.ends_at, row.last_received_at = "resolved", at, utcnow()
        row.labels, row.annotations, row.receive_count = alert.labels, alert.annotations, row.receive_count + repeats
        session.add(row)
        if changed:
            incident_event(
                session,
                kind="alert.resolved",
                incident_id=incident.id,
                actor=actor.name,
                source=alert.source,
                fingerprint=alert.fingerprint,
                alertname=alert.name,
                ends_at=at.isoformat(),
            )
            _tool_message(session, incident, alert, resolved_message(alert, at), actor)
        incident_id = incident.id
    if changed:
        _resolve_if_done(engine, incident_id, alert, actor)
    return AlertOutcome(incident_id=incident_id, fingerprint=alert.fingerprint, action="resolved")


def _resolve_if_done(engine: Engine, incident_id: int, alert: ReceivedAlert, actor: Actor) -> None:
    """After the resolved alert is committed: resolve the incident if its run has completed and none of its alerts
    fires. Reading the run's row FOR SHARE waits for a projection write in flight, and that write's own check of
    the alerts locks them too and so sees this commit: whichever of the two comes second resolves the incident."""
    with session_scope(engine) as session:
        workflow_id = session.exec(select(Incident.workflow_id).where(Incident.id == incident_id)).one()
        run = session.exec(
            select(WorkflowRun).where(WorkflowRun.workflow_id == workflow_id).with_for_update(read=True)
        ).first()
        if run is None or run.status != "completed" or _firing(session, incident_id):
            return
        incident = session.exec(select(Incident).where(Incident.id == incident_id).with_for_update()).one()
        if incident.workflow_id == workflow_id:
            _resolve_by_source(session, incident, alert, actor)


def _firing(session: Session, incident_id: int) -> bool:
    return (
        session.exec(
            select(IncidentAlert.id).where(IncidentAlert.incident_id == incident_id, IncidentAlert.status == "firing")
        ).first()
        is not None
    )


def _resolve_by_source(session: Session, incident: Incident, alert: ReceivedAlert, actor: Actor) -> None:
    """Its playbook has run and its last firing alert has resolved: the incident is resolved, by its source."""
    if incident.status not in ("open", "in_progress", "reopened"):
        return  # a person's choice (resolved, closed) stands
    assert incident.id is not None
    before, now = incident.status, utcnow()
    incident.status, incident.resolved_at, incident.updated_at = "resolved", now, now
    session.add(incident)
    incident_event(
        session,
        kind="incident.status",
        incident_id=incident.id,
        actor=actor.name,
        status="resolved",
        previous=before,
        comment=f"{alert.source} says {alert.name or 'the alert'} has resolved",
    )


STARTS_AT_ONCE = 16  # workflow starts of one request in flight together (a Temporal round trip each)


async def _start_all(*, engine: Engine, temporal: Client, settings: Settings, starts: list[Firing]) -> list[str]:
    """Start the workflows of the incidents a request opened, STARTS_AT_ONCE at a time, each playbook pinned once
    per request (a burst of alerts opens many incidents of a few types); what could not start, for the answer."""
    gate = asyncio.Semaphore(STARTS_AT_ONCE)
    pins: dict[tuple[object, ...], asyncio.Task[Pinned]] = {}
    unstarted: list[str] = []

    def pinned_for(incident: Incident) -> asyncio.Task[Pinned]:
        key = (incident.playbook_id, incident.playbook_version, incident.incident_type, incident.service)
        if key not in pins:
            pins[key] = asyncio.ensure_future(on_pool(engine, partial(_pin, engine, settings, incident)))
        return pins[key]

    async def start(firing: Firing) -> None:
        incident = firing.start
        assert incident is not None
        async with gate:
            try:
                pinned = await pinned_for(incident)
                await start_incident_workflow(
                    temporal=temporal, engine=engine, incident=incident, settings=settings, fresh=firing.fresh,
                    pinned=pinned,
                )  # fmt: skip
            except RPCError as err:
                unstarted.append(f"incident {incident.id} ({err.message})")

    await asyncio.gather(*(start(firing) for firing in starts))
    return sorted(unstarted, key=lambda line: int(line.split()[1]))


def _pin(engine: Engine, settings: Settings, incident: Incident) -> Pinned:
    with Session(engine) as session:
        return pin(session, settings, incident)


async def ingest_alerts(
    *, engine: Engine, temporal: Client, settings: Settings, actor: Actor, alerts: list[ReceivedAlert]
) -> AlertsAccepted:
    """Route, deduplicate and record each alert in order; start the workflows of the incidents opened.
    Raises WorkflowsNotStarted (after every alert is recorded) when Temporal cannot start some."""
    rules = await in_session(engine, load_rules)
    outcomes: list[AlertOutcome] = []
    starts: list[Firing] = []
    # An alert repeated as is, one after the other (a storm from one misbehaving source): recorded once, counted as
    # many times. Each repeat after the first would change only the count (and the time last received), announce
    # nothing and answer the same: one transaction instead of one per repeat (1,000 of them took 6 s).
    for alert, run in itertools.groupby(alerts):
        repeats = sum(1 for _ in run)
        routed = route_alert(alert.labels, rules)
        if routed.drop:
            outcomes += [AlertOutcome(incident_id=None, fingerprint=alert.fingerprint, action="dropped")] * repeats
            continue
        if alert.status == "resolved":
            resolved = await on_pool(
                engine, partial(record_resolved, engine=engine, alert=alert, actor=actor, repeats=repeats)
            )
            outcomes += [resolved] * repeats
            continue
        firing = await on_pool(engine, partial(
            record_firing, engine=engine, alert=alert, routed=routed, settings=settings, actor=actor, repeats=repeats
        ))  # fmt: skip
        outcomes += [firing.outcome] + [firing.outcome.model_copy(update={"action": "attached"})] * (repeats - 1)
        if firing.start is not None:
            starts.append(firing)
    unstarted = await _start_all(engine=engine, temporal=temporal, settings=settings, starts=starts)
    if unstarted:
        raise WorkflowsNotStarted(
            f"recorded, but workflows could not start for {', '.join(unstarted)}; they start by themselves when "
            "Temporal is back (a repeat of this notification attaches to the same incidents)"
        )
    return AlertsAccepted(incidents=outcomes)
