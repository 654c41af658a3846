"""What the services pages show: each service's status as a person reads it (up, degraded, down, maintenance,
paused, unknown), its current streak, last check, open incident and availability over 24 h / 7 d / 30 d (from the
hour rollups: services/uptime.py); and, for one service, its recent raw results, its incidents and its maintenance
windows.

One query per table for the whole list (no query per service): the services page stays fast with a thousand rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, String, any_, bindparam, or_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col, select

from core.monitoring import MaintenanceWindow, ServiceState, UptimeMetric
from core.services import Service
from core.tables import ENDED_STATUSES, Incident, utcnow
from services.uptime import availability_by_service

DisplayStatus = Literal["up", "degraded", "down", "maintenance", "paused", "unknown"]
DISPLAY_STATUSES: tuple[DisplayStatus, ...] = ("up", "degraded", "down", "maintenance", "paused", "unknown")
RECENT_RESULTS = 50
SERVICE_INCIDENTS = 50


@dataclass
class ServiceRow:
    """One service as the services page lists it."""

    service_id: int
    name: str
    status: DisplayStatus
    enabled: bool
    config: dict[str, Any]
    state: ServiceState | None
    streak_checks: int = 0  # checks in a row with the current outcome
    streak_since: datetime | None = None  # since when the status holds
    last_checked_at: datetime | None = None
    last_error: str | None = None
    incident: Incident | None = None  # its open incident, if any
    maintenance: MaintenanceWindow | None = None  # the window holding now
    uptime: dict[str, float | None] = field(default_factory=dict)  # "24h" / "7d" / "30d" → availability

    @property
    def team(self) -> str | None:
        return self.config.get("team")

    @property
    def tags(self) -> list[str]:
        return list(self.config.get("tags", []))


def display_status(enabled: bool, state: ServiceState | None, window: MaintenanceWindow | None) -> DisplayStatus:
    if not enabled:
        return "paused"
    if window is not None:
        return "maintenance"
    status = state.status if state is not None else "unknown"
    return status if status in ("up", "degraded", "down") else "unknown"  # type: ignore[return-value]


def current_windows(session: Session, at: datetime) -> list[MaintenanceWindow]:
    """Maintenance windows holding at `at` (for one service or for all)."""
    query = select(MaintenanceWindow).where(col(MaintenanceWindow.starts_at) <= at, col(MaintenanceWindow.ends_at) > at)
    return list(session.exec(query))


def _row(service: Service, state: ServiceState | None, windows: list[MaintenanceWindow]) -> ServiceRow:
    window = next((w for w in windows if w.service in (None, service.name)), None)
    status = display_status(service.enabled, state, window)
    assert service.id is not None
    row = ServiceRow(service.id, service.name, status, service.enabled, service.config, state, maintenance=window)
    if state is not None:
        row.last_checked_at, row.last_error = state.last_checked_at, state.last_error
        if state.status == "down":
            row.streak_checks, row.streak_since = state.consecutive_failures, state.failing_since
        elif state.status in ("up", "degraded"):
            row.streak_checks, row.streak_since = state.consecutive_passes, state.last_change_at
    return row


def list_service_rows(
    *, session: Session, tag: str | None = None, team: str | None = None, status: str | None = None
) -> list[ServiceRow]:
    """Every service by name with its state, open incident and maintenance; narrowed by tag, team and status."""
    query = select(Service).order_by(col(Service.name))
    if team:
        query = query.where(col(Service.config)["team"].astext == team)
    if tag:
        query = query.where(col(Service.config)["tags"].contains([tag]))
    services = list(session.exec(query))
    ids = [s.id for s in services]
    # One array parameter, not one bind parameter per service (1,000 of them cost more to send than to run).
    by_id = col(ServiceState.service_id) == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
    states = {s.service_id: s for s in session.exec(select(ServiceState).where(by_id))}
    windows = current_windows(session, utcnow())
    rows = [_row(s, states.get(s.id or 0), windows) for s in services]
    if status:
        rows = [r for r in rows if r.status == status]
    _attach_incidents(session, rows)
    figures = availability_by_service(session=session, service_ids=[r.service_id for r in rows])
    for row in rows:
        row.uptime = figures.get(row.service_id, {})
    return rows


def _attach_incidents(session: Session, rows: list[ServiceRow]) -> None:
    """Each service's open incident: its outage's, else its newest one not ended (a slow spell's, a person's)."""
    by_id = {r.state.incident_id: r for r in rows if r.state is not None and r.state.incident_id}
    names = [r.name for r in rows]
    if not names:
        return
    query = select(Incident).where(
        or_(
            col(Incident.id) == any_(bindparam("incident_ids", list(by_id), type_=ARRAY(BigInteger))),
            col(Incident.service) == any_(bindparam("names", names, type_=ARRAY(String))),
        ),
        col(Incident.status).not_in(ENDED_STATUSES),
    )
    found = sorted(session.exec(query), key=lambda i: i.id or 0, reverse=True)
    by_name = {r.name: r for r in rows}
    for incident in found:
        row = by_id.get(incident.id or 0) or by_name.get(incident.service)
        if row is not None and (row.incident is None or incident.id == (row.state and row.state.incident_id)):
            row.incident = incident


def service_filters(session: Session) -> tuple[list[str], list[str]]:
    """The tags and teams the services use (for the page's filter lists)."""
    tags: set[str] = set()
    teams: set[str] = set()
    for config in session.exec(select(Service.config)):
        tags.update(config.get("tags", []))
        if config.get("team"):
            teams.add(config["team"])
    return sorted(tags), sorted(teams)


@dataclass
class ServiceDetail:
    service: Service
    row: ServiceRow
    results: list[UptimeMetric]  # newest first
    incidents: list[Incident]  # newest first
    windows: list[MaintenanceWindow]  # current and upcoming, soonest first
    dependents: list[str]


def service_detail(*, session: Session, row: ServiceRow, service: Service) -> ServiceDetail:
    """One service's page: its recent raw results, its incidents, its maintenance windows and who depends on it."""
    results = session.exec(
        select(UptimeMetric)
        .where(UptimeMetric.service_id == service.id)
        .order_by(col(UptimeMetric.checked_at).desc())
        .limit(RECENT_RESULTS)
    )
    incidents = session.exec(
        select(Incident)
        .where(Incident.service == service.name)
        .order_by(col(Incident.id).desc())
        .limit(SERVICE_INCIDENTS)
    )
    windows = session.exec(
        select(MaintenanceWindow)
        .where(
            or_(col(MaintenanceWindow.service).is_(None), col(MaintenanceWindow.service) == service.name),
            col(MaintenanceWindow.ends_at) > utcnow(),
        )
        .order_by(col(MaintenanceWindow.starts_at))
        .limit(20)
    )
    dependents = [
        other.name
        for other in session.exec(select(Service).where(col(Service.config)["dependencies"].contains([service.name])))
    ]
    return ServiceDetail(service, row, list(results), list(incidents), list(windows), sorted(dependents))


def one_service_row(*, session: Session, service: Service) -> ServiceRow:
    row = _row(service, session.get(ServiceState, service.id), current_windows(session, utcnow()))
    _attach_incidents(session, [row])
    row.uptime = availability_by_service(session=session, service_ids=[row.service_id]).get(row.service_id, {})
    return row
