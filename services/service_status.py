"""What the services pages show: each service's status as a person reads it (up, degraded, down, maintenance,
paused, unknown), its current streak, last check, open incident and availability over 24 h / 7 d / 30 d (from the
hour rollups: services/uptime.py); and, for one service, its recent raw results, its incidents and its maintenance
windows.

The list is paged: the statuses of every matching service are counted in Postgres, and only the page's rows are
read whole (their incidents and availability: one query per table, no query per service), so the page costs about
the same at ten services and at ten thousand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, String, any_, bindparam, case, func, not_, or_, text, true
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


# The list's count line, worst first: "10,000 services: 2 down, 1 degraded, 9,990 up, 7 paused".
COUNT_ORDER: tuple[DisplayStatus, ...] = ("down", "degraded", "up", "maintenance", "paused", "unknown")
PAGE_SIZE = 200  # services on one page of the list: at 10,000 services the page stays one screenful of work


@dataclass
class ServicePage:
    """One page of the services list, with the figures of every service the filters (other than status) match."""

    rows: list[ServiceRow]
    total: int  # services matching tag, team and name (any status)
    counts: dict[str, int]  # … by display status
    matching: int  # … and the status filter too: what the pages page through
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.matching else None

    @property
    def previous_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None


def _matches(tag: str | None, team: str | None, q: str | None) -> list[ColumnElement[bool]]:
    """The list's filters other than status, as conditions on `services`."""
    where: list[ColumnElement[bool]] = []
    if team:
        where.append(col(Service.config)["team"].astext == team)
    if tag:
        where.append(col(Service.config)["tags"].contains([tag]))
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(col(Service.name).ilike(f"%{escaped}%", escape="\\"))
    return where


def _status_of(windows: list[MaintenanceWindow]) -> ColumnElement[str]:
    """display_status() in SQL, for a `services` row joined to its `service_states` row (or none): the windows
    holding now are few and already read, so they go in as parameters."""
    in_window: ColumnElement[bool] = col(Service.name) == any_(
        bindparam("window_services", sorted({w.service for w in windows if w.service}), type_=ARRAY(String))
    )
    if any(w.service is None for w in windows):  # a window for every service
        in_window = true()
    return case(
        (not_(col(Service.enabled)), "paused"),
        (in_window, "maintenance"),
        (col(ServiceState.status).in_(("up", "degraded", "down")), col(ServiceState.status)),
        else_="unknown",
    )


def _with_state(query: Any) -> Any:
    return query.outerjoin(ServiceState, col(ServiceState.service_id) == col(Service.id))


def _complete(session: Session, rows: list[ServiceRow]) -> list[ServiceRow]:
    """The rows shown: their open incident and availability (the costly part, so only for those shown)."""
    _attach_incidents(session, rows)
    figures = availability_by_service(session=session, service_ids=[r.service_id for r in rows])
    for row in rows:
        row.uptime = figures.get(row.service_id, {})
    return rows


def service_list_page(
    *,
    session: Session,
    tag: str | None = None,
    team: str | None = None,
    status: str | None = None,
    q: str | None = None,
    offset: int = 0,
    limit: int = PAGE_SIZE,
) -> ServicePage:
    """One page of the services list by name: the statuses of every match counted in Postgres (one row per
    status), then the page's services, states, incidents and availability read for its rows alone."""
    windows = current_windows(session, utcnow())
    status_of = _status_of(windows)
    where = _matches(tag, team, q)
    counted = session.exec(
        _with_state(select(status_of, func.count()).select_from(Service)).where(*where).group_by(status_of)
    )
    found = {str(name): int(n) for name, n in counted.all()}
    counts: dict[str, int] = {name: found[name] for name in COUNT_ORDER if name in found}
    matching = counts.get(status, 0) if status else sum(counts.values())
    query = _with_state(select(Service, ServiceState)).where(*where)
    if status:
        query = query.where(status_of == status)
    shown = session.exec(query.order_by(col(Service.name)).offset(offset).limit(limit)).all()
    page = _complete(session, [_row(service, state, windows) for service, state in shown])
    return ServicePage(page, sum(counts.values()), counts, matching, offset, limit)


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


_FILTERS = text(
    """
    SELECT 'tag', tag FROM services,
        jsonb_array_elements_text(CASE jsonb_typeof(config -> 'tags') WHEN 'array' THEN config -> 'tags'
                                  ELSE '[]'::jsonb END) AS tag
    UNION
    SELECT 'team', config ->> 'team' FROM services WHERE coalesce(config ->> 'team', '') <> ''
    """
)


def service_filters(session: Session) -> tuple[list[str], list[str]]:
    """The tags and teams the services use (for the page's filter lists), gathered in Postgres."""
    found = session.connection().execute(_FILTERS).all()
    return sorted(v for k, v in found if k == "tag"), sorted(v for k, v in found if k == "team")


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
