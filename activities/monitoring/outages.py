"""The incident side of an outage: opening its incident, or joining the service's incident someone opened already,
and what the monitor tells an incident's agents (`tool` messages) when its service goes down and recovers.

Incidents open through the one incident opener (services/incidents/open.py), which the worker hands in as an
`OpenIncident` (core/opening.py): activities sit below services/ and do not import it.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from activities.monitoring.degraded import raise_for_outage
from activities.monitoring.rows import MONITOR, Outage, Result, Window, duration, in_maintenance, target
from core.collaboration import LinkConflict, link_incidents
from core.conversations import append_tool_message
from core.events import incident_event
from core.monitoring import ServiceState, episode_key
from core.opening import OpenIncident
from core.services import HttpCheck, Service, ServiceBase
from core.settings import Settings
from core.tables import ENDED_STATUSES, Event, Incident, IncidentCreate, utcnow


class OutageOpener:
    """Opens (or joins) outages' incidents through the injected opener."""

    def __init__(self, engine: Engine, settings: Settings, open_incident: OpenIncident) -> None:
        self.engine = engine
        self.settings = settings
        self.open_incident = open_incident

    async def open(self, outage: Outage, windows: list[Window]) -> int | None:
        """Open (or join) the outage's incident and start its playbook; None while a maintenance window holds.

        Keyed by the outage: a retried attempt finds its incident again and starts its playbook if it did not run
        yet. A joined incident's playbook is its opener's business."""
        if in_maintenance(windows, outage.name, utcnow()):
            return None
        service_id, name, config, episode = outage.service_id, outage.name, outage.config, outage.episode
        detail = _down_detail(outage)
        opened = await self.open_incident(
            engine=self.engine,
            temporal=activity.client(),
            settings=self.settings,
            data=IncidentCreate(
                title=f"{name} is down",
                description=detail,
                service=name,
                service_url=config.check.url if isinstance(config.check, HttpCheck) else None,
                severity=config.severity,
                incident_type=config.incident_type,
                playbook_id=config.default_playbook,
            ),
            actor=MONITOR,
            idempotency_key=episode_key(service_id, episode),
            playbook_fallback=True,  # a playbook removed since the service named it: the type's playbook runs
            reopen=lambda session: incident_to_reopen(session, outage, detail),
            join=lambda session: join_open_incident(session, service_id, name, config, episode, detail),
            on_created=lambda session, incident: self._created(session, incident, outage, detail),
        )
        assert opened.incident.id is not None
        return opened.incident.id

    @staticmethod
    def _created(session: Session, incident: Incident, outage: Outage, detail: str) -> None:
        _down_message(session, incident, detail, outage.name, outage.episode)
        session.commit()
        link_dependencies(session, incident, outage)


def link_dependencies(session: Session, incident: Incident, outage: Outage) -> None:
    """A new outage's incident `caused_by` the open outage incidents of the services it depends on, and those of
    the services depending on it `caused_by` it: the victim's incident points at the cause's."""
    open_outages = (
        select(Incident)
        .join(ServiceState, col(ServiceState.incident_id) == Incident.id)
        .join(Service, col(Service.id) == ServiceState.service_id)
        .where(ServiceState.status == "down", col(Incident.status).not_in(ENDED_STATUSES), Incident.id != incident.id)
    )
    causes = session.exec(open_outages.where(col(Service.name).in_(outage.config.dependencies))).all()
    victims = session.exec(open_outages.where(col(Service.config)["dependencies"].contains([outage.name]))).all()
    pairs = [(incident, cause) for cause in causes] + [(victim, incident) for victim in victims]
    for victim, cause in pairs:
        try:
            link_incidents(session=session, incident=victim, related=cause, kind="caused_by", actor=MONITOR)
        except LinkConflict:
            continue  # linked already (a retried tick, or a person)


def incident_to_reopen(session: Session, outage: Outage, detail: str) -> tuple[Incident, str] | None:
    """The ended incident this outage reopens, and why: the outage's own (resolved or closed while the service
    stayed down), or the service's last one when it was resolved less than `reopen_within_seconds` ago (a flap).
    The monitor's message for the agents is written with it."""
    name, config, episode = outage.name, outage.config, outage.episode
    incident, why = None, ""
    if outage.ended_incident is not None:
        incident = session.get(Incident, outage.ended_incident)
        why = f"monitor: {name} is still down (outage {episode}): the incident ended while the outage went on"
    elif config.reopen_within_seconds > 0:
        since = utcnow() - timedelta(seconds=config.reopen_within_seconds)
        incident = session.exec(  # this service's own outages and slow spells (registered again: afresh)
            select(Incident)
            .where(
                Incident.service == name,
                col(Incident.incident_type).in_(joinable_types(config)),
                col(Incident.idempotency_key).startswith(f"service:{outage.service_id}:"),
            )
            .order_by(col(Incident.id).desc())
            .limit(1)
        ).first()
        if incident is not None and incident.resolved_at is not None and incident.resolved_at >= since:
            ago = duration(utcnow() - incident.resolved_at)
            why = f"monitor: {name} failed again {ago} after this incident was resolved (outage {episode}): reopened"
        else:
            incident = None
    if incident is None or incident.status not in ENDED_STATUSES:
        return None  # reopened already (an earlier attempt, a person): the join finds it open
    _down_message(session, incident, detail, name, episode)
    raise_for_outage(session, incident, outage.service_id, config, episode)
    session.commit()
    return incident, why


def join_open_incident(
    session: Session, service_id: int, name: str, config: ServiceBase, episode: int, detail: str
) -> Incident | None:
    """The service's incident someone already opened (an alert, a person, its slow spell), which this outage joins
    (announced once, also when a retried attempt joins again); None when this outage's own incident exists or none
    is open."""
    key = episode_key(service_id, episode)
    if session.exec(select(Incident.id).where(Incident.idempotency_key == key)).first() is not None:
        return None  # ours, from an earlier attempt: the opener finds it by its key
    existing = session.exec(
        select(Incident)
        .where(
            Incident.service == name,
            col(Incident.incident_type).in_(joinable_types(config)),
            col(Incident.status).not_in(ENDED_STATUSES),
        )
        .order_by(col(Incident.id).desc())
    ).first()
    if existing is None:
        return None
    assert existing.id is not None
    joined = session.exec(  # by an earlier attempt of this tick, whose link did not land
        select(Event.id).where(
            Event.incident_id == existing.id,
            Event.kind == "incident.service_down",
            col(Event.data)["service_id"].as_integer() == service_id,
            col(Event.data)["episode"].as_integer() == episode,
        )
    ).first()
    if joined is None:
        incident_event(
            session, kind="incident.service_down", incident_id=existing.id, actor=MONITOR.name,
            service=name, service_id=service_id, episode=episode,
        )  # fmt: skip
        _down_message(session, existing, detail, name, episode)
        raise_for_outage(session, existing, service_id, config, episode)
        session.commit()
    return existing


def joinable_types(config: ServiceBase) -> list[str]:
    """The incident types an outage of the service joins or reopens: its own, and its slow spells' (a slowdown that
    turns into an outage stays one incident)."""
    spells = config.degraded_incident
    return [config.incident_type] + ([spells.incident_type] if spells is not None else [])


def record_recovery(session: Session, r: Result, incident_id: int) -> None:
    """The recovery on the outage's incident: an event, and a `tool` message for the agents that run after it."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        return
    since = r.before.failing_since
    lasted = f" after {duration(r.checked_at - since)}" if since else ""
    incident_event(
        session,
        kind="incident.service_recovered",
        incident_id=incident_id,
        actor=MONITOR.name,
        service=r.due.name,
        status=r.status,
        checks_passed=r.after.consecutive_passes,
        down_since=since.isoformat() if since else None,
    )
    append_tool_message(
        session,
        incident_id=incident_id,
        workflow_id=incident.workflow_id,
        content=(
            f"monitor: {r.due.name} recovered at {r.checked_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC{lasted}: "
            f"{r.after.consecutive_passes} check(s) in a row passed ({r.status}"
            + (f", {r.outcome.latency_ms:g} ms" if r.outcome and r.outcome.latency_ms is not None else "")
            + ")."
        ),
        actor=MONITOR.name,
        meta={"service": r.due.name, "monitor": "recovered"},
    )


def _down_detail(outage: Outage) -> str:
    since, error = outage.since, outage.error
    return (
        f"monitor: {outage.name} failed {outage.config.failure_threshold} check(s) in a row"
        + (f" since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if since else "")
        + f" ({target(outage.config)})"
        + (f": {error}" if error else "")
    )


def _down_message(session: Session, incident: Incident, detail: str, service: str, episode: int) -> None:
    """What the monitor saw, for the incident's agents (a `tool` message of its conversation)."""
    assert incident.id is not None
    append_tool_message(
        session, incident_id=incident.id, workflow_id=incident.workflow_id, content=detail, actor=MONITOR.name,
        meta={"service": service, "monitor": "down", "episode": episode},
    )  # fmt: skip
