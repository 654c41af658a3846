"""A sustained slowdown's incident (a service's `degraded_incident` setting): a slow spell of `after_checks` slow
checks in a row (passes slower than degraded_latency_ms) opens one incident of the setting's type and severity,
through the same opener as an outage, keyed by the spell (`service:<id>:degraded:<first slow check, epoch ms>`), so a
spell opens at most one incident whatever the retries. It joins the service's open incident instead (of the outage
type or of its own), or reopens its last degraded incident resolved less than `reopen_within_seconds` ago.

A spell is read back from the stored results (`uptime_metrics`): the slow results since the service's last result
that was not slow. Its end (`recovery_threshold` fast passes in a row) is recorded on its incident. When the service
then goes down, its outage joins or reopens the degraded incident (outages.py) and raises its severity
(`raise_for_outage`): the outage's severity, never lower.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from temporalio import activity

from activities.monitoring.rows import MONITOR, Result, Window, duration, in_maintenance, target
from activities.monitoring.threads import in_monitor_thread
from core.audit import record_audit
from core.conversations import append_tool_message
from core.escalation import raised
from core.events import incident_event
from core.opening import OpenIncident
from core.services import DegradedIncident, HttpCheck, ServiceBase
from core.settings import Settings
from core.tables import ENDED_STATUSES, Event, Incident, IncidentCreate, utcnow

DEGRADED_EVENT = "incident.service_degraded"

# Where the slow spell a result belongs to began: its first slow result since the service's last result that was not
# slow. Two probes of the unique index on (service_id, scheduled_at), however long the spell.
SPELL_START = text("""
SELECT min(scheduled_at) FROM uptime_metrics
WHERE service_id = :service_id AND scheduled_at <= :at
  AND scheduled_at > coalesce((SELECT max(scheduled_at) FROM uptime_metrics
                               WHERE service_id = :service_id AND scheduled_at <= :at
                                 AND error_kind IS DISTINCT FROM 'slow'), '-infinity')
""")

# Its checks so far (counted up to a bound: only a spell still without an incident is counted).
SPELL_CHECKS = text("""
SELECT count(*) FROM (SELECT 1 FROM uptime_metrics
                      WHERE service_id = :service_id AND scheduled_at >= :since AND scheduled_at <= :at
                      LIMIT 10000) AS spell
""")

# The spell has its incident already: stored under its key, or joined or reopened for it.
HANDLED = text("""
SELECT EXISTS (SELECT 1 FROM incidents WHERE idempotency_key = :key)
    OR EXISTS (SELECT 1 FROM events e JOIN incidents i ON i.id = e.incident_id
               WHERE i.service = :name AND e.kind = 'incident.service_degraded' AND e.data ->> 'spell' = :key)
""")

LAST_STATUSES = text("""
SELECT status FROM uptime_metrics WHERE service_id = :service_id AND scheduled_at <= :at
ORDER BY scheduled_at DESC LIMIT :n
""")

# The service's last spell announced on an incident, unless a recovery was recorded on that incident since (the
# spell's own, or its outage's).
UNRECOVERED_SPELL = text("""
SELECT e.incident_id, e.data ->> 'spell', e.data ->> 'since'
FROM events e JOIN incidents i ON i.id = e.incident_id
WHERE i.service = :name AND e.kind = 'incident.service_degraded'
  AND (e.data ->> 'service_id')::bigint = :service_id
  AND NOT EXISTS (SELECT 1 FROM events r WHERE r.incident_id = e.incident_id
                  AND r.kind = 'incident.service_recovered' AND r.id > e.id)
ORDER BY e.id DESC LIMIT 1
""")


def spell_key(service_id: int, since: datetime) -> str:
    """The Idempotency-Key of a slow spell's incident (its first slow check's due time, in epoch milliseconds)."""
    return f"service:{service_id}:degraded:{round(since.timestamp() * 1000)}"


def degraded_prefix(service_id: int) -> str:
    return f"service:{service_id}:degraded:"


@dataclass(frozen=True)
class SlowSpell:
    """`checks` slow checks in a row of a service, the first due at `since`, the last `latency_ms` long."""

    service_id: int
    name: str
    config: ServiceBase
    setting: DegradedIncident
    since: datetime
    checks: int
    latency_ms: float

    @property
    def key(self) -> str:
        return spell_key(self.service_id, self.since)

    @property
    def title(self) -> str:
        return (
            f"{self.name} is degraded: answered in {self.latency_ms:g} ms, above {self.config.degraded_above_ms:g} ms "
            f"for {self.checks} checks"
        )

    @property
    def detail(self) -> str:
        return (
            f"monitor: {self.name} answered slower than {self.config.degraded_above_ms:g} ms in {self.checks} "
            f"check(s) in a row since {self.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({target(self.config)}); "
            f"the last took {self.latency_ms:g} ms"
        )


def slow_candidate(r: Result) -> bool:
    """A slow pass of a service whose slow spells open incidents, while it is not in an outage."""
    return (
        r.due.config.degraded_incident is not None
        and r.error_kind == "slow"
        and r.after.status == "degraded"
        and r.outcome is not None
        and r.outcome.latency_ms is not None
    )


class DegradedOpener:
    """Opens (or joins, or reopens) slow spells' incidents through the injected opener."""

    def __init__(self, engine: Engine, settings: Settings, open_incident: OpenIncident) -> None:
        self.engine = engine
        self.settings = settings
        self.open_incident = open_incident

    def due_spell(self, r: Result) -> SlowSpell | None:
        """The spell this stored slow result belongs to, when it is long enough and has no incident yet."""
        setting = r.due.config.degraded_incident
        assert setting is not None and r.outcome is not None and r.outcome.latency_ms is not None
        sid, at = r.due.service_id, r.scheduled_at
        with self.engine.begin() as conn:
            since = conn.execute(SPELL_START, {"service_id": sid, "at": at}).scalar_one()
            if since is None or conn.execute(HANDLED, {"key": spell_key(sid, since), "name": r.due.name}).scalar_one():
                return None
            checks = conn.execute(SPELL_CHECKS, {"service_id": sid, "since": since, "at": at}).scalar_one()
        if checks < setting.after_checks:
            return None
        return SlowSpell(sid, r.due.name, r.due.config, setting, since, checks, r.outcome.latency_ms)

    async def pending(self, r: Result) -> SlowSpell | None:
        return await in_monitor_thread(self.due_spell, r)

    async def open(self, spell: SlowSpell, windows: list[Window]) -> int | None:
        """Open (or join, or reopen) the spell's incident; None while a maintenance window holds."""
        if in_maintenance(windows, spell.name, utcnow()):
            return None
        config = spell.config
        opened = await self.open_incident(
            engine=self.engine,
            temporal=activity.client(),
            settings=self.settings,
            data=IncidentCreate(
                title=spell.title,
                description=spell.detail,
                service=spell.name,
                service_url=config.check.url if isinstance(config.check, HttpCheck) else None,
                severity=spell.setting.severity,
                incident_type=spell.setting.incident_type,
            ),
            actor=MONITOR,
            idempotency_key=spell.key,
            reopen=lambda session: degraded_incident_to_reopen(session, spell),
            join=lambda session: join_for_spell(session, spell),
            on_created=lambda session, incident: _announce(session, incident, spell, "opened"),
        )
        assert opened.incident.id is not None
        return opened.incident.id


def _open_incident_of(session: Session, spell: SlowSpell) -> Incident | None:
    """The service's open incident a spell joins: of its outage type or of the spell's own type."""
    return session.exec(
        select(Incident)
        .where(
            Incident.service == spell.name,
            col(Incident.incident_type).in_([spell.config.incident_type, spell.setting.incident_type]),
            col(Incident.status).not_in(ENDED_STATUSES),
        )
        .order_by(col(Incident.id).desc())
    ).first()


def join_for_spell(session: Session, spell: SlowSpell) -> Incident | None:
    """The service's open incident this spell joins (announced on it); None when the spell's own incident exists (the
    opener finds it by its key) or none is open."""
    if session.exec(select(Incident.id).where(Incident.idempotency_key == spell.key)).first() is not None:
        return None
    existing = _open_incident_of(session, spell)
    if existing is None:
        return None
    if not _announced(session, existing, spell):  # by an earlier attempt of this tick
        _announce(session, existing, spell, "joined")
    return existing


def degraded_incident_to_reopen(session: Session, spell: SlowSpell) -> tuple[Incident, str] | None:
    """The service's last slow-spell incident, when it was resolved less than `reopen_within_seconds` ago and no
    incident of the service is open (a slowdown that comes back is one incident, as a flapping outage is)."""
    config = spell.config
    if config.reopen_within_seconds <= 0 or _open_incident_of(session, spell) is not None:
        return None
    incident = session.exec(
        select(Incident)
        .where(
            Incident.service == spell.name,
            Incident.incident_type == spell.setting.incident_type,
            col(Incident.idempotency_key).startswith(degraded_prefix(spell.service_id)),
        )
        .order_by(col(Incident.id).desc())
        .limit(1)
    ).first()
    since = utcnow() - timedelta(seconds=config.reopen_within_seconds)
    if incident is None or incident.status not in ENDED_STATUSES or not incident.resolved_at:
        return None
    if incident.resolved_at < since:
        return None
    ago = int((utcnow() - incident.resolved_at).total_seconds())
    why = f"monitor: {spell.name} is slow again {ago}s after this incident was resolved: reopened"
    _announce(session, incident, spell, "reopened")
    return incident, why


def _announced(session: Session, incident: Incident, spell: SlowSpell) -> bool:
    return (
        session.exec(
            select(Event.id).where(
                Event.incident_id == incident.id,
                Event.kind == DEGRADED_EVENT,
                col(Event.data)["spell"].astext == spell.key,
            )
        ).first()
        is not None
    )


def _announce(session: Session, incident: Incident, spell: SlowSpell, how: str) -> None:
    """The spell on the incident's timeline, and what the monitor saw as a `tool` message for its agents."""
    assert incident.id is not None
    incident_event(
        session, kind=DEGRADED_EVENT, incident_id=incident.id, actor=MONITOR.name, service=spell.name,
        service_id=spell.service_id, spell=spell.key, since=spell.since.isoformat(), checks=spell.checks,
        latency_ms=spell.latency_ms, threshold_ms=spell.config.degraded_above_ms, how=how,
    )  # fmt: skip
    append_tool_message(
        session, incident_id=incident.id, workflow_id=incident.workflow_id, content=spell.detail, actor=MONITOR.name,
        meta={"service": spell.name, "monitor": "degraded", "spell": spell.key},
    )  # fmt: skip
    session.commit()


def record_spell_end(session: Session, r: Result) -> None:
    """When this fast pass is the `recovery_threshold`-th in a row, the end of the service's last slow spell on its
    incident (unless a recovery was recorded there since: the outage it turned into recovered). In the transaction
    that stored the result."""
    if r.status != "up" or r.due.config.degraded_incident is None:
        return
    n = r.due.config.recovery_threshold
    statuses = session.execute(
        LAST_STATUSES, {"service_id": r.due.service_id, "at": r.scheduled_at, "n": n + 1}
    ).scalars().all()  # fmt: skip
    if len(statuses) != n + 1 or any(s != "up" for s in statuses[:n]) or statuses[n] == "up":
        return
    found = session.execute(UNRECOVERED_SPELL, {"name": r.due.name, "service_id": r.due.service_id}).first()
    if found is None:
        return
    incident_id, key, since_text = found
    incident = session.get(Incident, incident_id)
    if incident is None:
        return
    since = datetime.fromisoformat(since_text) if since_text else None
    threshold = r.due.config.degraded_above_ms
    incident_event(
        session, kind="incident.service_recovered", incident_id=incident_id, actor=MONITOR.name, service=r.due.name,
        status=r.status, checks_passed=n, degraded_since=since_text, spell=key,
    )  # fmt: skip
    lasted = f" after {duration(r.checked_at - since)} slow" if since else ""
    latency = r.outcome.latency_ms if r.outcome and r.outcome.latency_ms is not None else None
    append_tool_message(
        session,
        incident_id=incident_id,
        workflow_id=incident.workflow_id,
        content=(
            f"monitor: {r.due.name} is fast again at {r.checked_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC{lasted}: "
            f"{n} check(s) in a row answered within {threshold:g} ms"
            + (f" (the last in {latency:g} ms)" if latency is not None else "")
            + "."
        ),
        actor=MONITOR.name,
        meta={"service": r.due.name, "monitor": "fast_again", "spell": key},
    )


def raise_for_outage(session: Session, incident: Incident, service_id: int, config: ServiceBase, episode: int) -> None:
    """An outage joining (or reopening) the service's slow-spell incident raises its severity to the outage's (never
    lowers it): the service is down now, not slow. On the timeline and in the audit log; the caller commits."""
    if not (incident.idempotency_key or "").startswith(degraded_prefix(service_id)):
        return
    before = incident.severity
    after = raised(before, config.severity)
    if after == before:
        return
    assert incident.id is not None
    incident.severity, incident.updated_at = after, utcnow()
    session.add(incident)
    incident_event(
        session, kind="incident.severity_raised", incident_id=incident.id, actor=MONITOR.name,
        previous_severity=before, severity=after, reason=f"{incident.service} is down (outage {episode})",
    )  # fmt: skip
    record_audit(session, actor=MONITOR, action="incident.severity", target_type="incident", target_id=incident.id,
                 before={"severity": before}, after={"severity": after})  # fmt: skip
