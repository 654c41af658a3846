"""The public status page's content (issue 21): what anyone may read without logging in, and the public updates
responders write for it.

Only services whose definition opts in (core/services.py: `public`) are shown, and of them only their public name
and group, a status in the words status pages use (operational, degraded performance, partial outage, major
outage, under maintenance), and 90 days of daily availability from the day rollups. Of incidents, only those of
public services that a responder has written a public update for, and of those only the updates' texts: never a
service's internal name, check, URL or error, nor an incident's title, description or comments.

Services listed under the same public name and group form one component: some of them down is a partial outage,
all of them a major one. A handful of queries for the whole page, whatever the number of services.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import text
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.errors import Invalid, NotFound
from core.events import incident_event
from core.monitoring import ServiceState
from core.services import PublicListing, Service
from core.tables import ENDED_STATUSES, Incident, IncidentPublicUpdate, PublicUpdateCreate, utcnow
from core.uptime import availability
from services.service_status import current_windows, display_status

DAYS = 90
PAST_INCIDENT_DAYS = 7  # a resolved incident's public updates stay on the page this long
UPDATES_PER_INCIDENT = 20
ComponentStatus = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance", "unknown"
]
STATUS_TEXT: dict[str, str] = {
    "operational": "Operational",
    "degraded_performance": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "under_maintenance": "Under maintenance",
    "unknown": "No data yet",
}
UPDATE_TEXT = {"investigating": "Investigating", "identified": "Identified", "monitoring": "Monitoring",
               "resolved": "Resolved"}  # fmt: skip
# The page's one-line verdict, as Statuspage's indicator: none, minor, major, critical, maintenance.
INDICATOR_TEXT = {
    "none": "All systems operational",
    "minor": "Degraded performance",
    "major": "Partial system outage",
    "critical": "Major system outage",
    "maintenance": "Maintenance in progress",
    "unknown": "No data yet",
}
# Each component's days: its services' day rollups summed in the database (a row per component and day, not per
# service and day). The listing's name and group are stored as validated (core/services.py: PublicListing).
DAY_ROLLUPS = """
SELECT s.config->'public'->>'group' AS grp, s.config->'public'->>'name' AS name, r.bucket,
       sum(r.checks)::int, sum(r.up)::int, sum(r.degraded)::int, sum(r.down)::int, sum(r.maintenance)::int
FROM uptime_rollups_day r JOIN services s ON s.id = r.service_id
WHERE r.service_id = ANY(CAST(:ids AS bigint[])) AND r.bucket >= :start
GROUP BY 1, 2, 3
"""


@dataclass
class Day:
    """One UTC day of one component: its services' checks summed (today: so far)."""

    day: date
    checks: int = 0
    up: int = 0
    degraded: int = 0
    down: int = 0
    maintenance: int = 0

    @property
    def availability(self) -> float | None:
        return availability(checks=self.checks, up=self.up, degraded=self.degraded, maintenance=self.maintenance)

    @property
    def level(self) -> str:
        """The bar's colour: none (no data), maintenance, ok (≥ 99.9 %), minor (≥ 99 %), major."""
        value = self.availability
        if value is None:
            return "maintenance" if self.maintenance else "none"
        return "ok" if value >= 0.999 else "minor" if value >= 0.99 else "major"

    def add(self, counts: Day | tuple[int, ...]) -> None:
        """Add another day's checks (or a rollup row's: checks, up, degraded, down, maintenance)."""
        if isinstance(counts, Day):
            counts = (counts.checks, counts.up, counts.degraded, counts.down, counts.maintenance)
        self.checks += counts[0]
        self.up += counts[1]
        self.degraded += counts[2]
        self.down += counts[3]
        self.maintenance += counts[4]

    def describe(self, today: date) -> str:
        """The bar's tooltip: the day and what happened in it."""
        when = self.day.strftime("%a %d %b %Y") + (" (today, so far)" if self.day == today else "")
        value = self.availability
        if value is None:
            return f"{when}: {'maintenance all day' if self.maintenance else 'no data'}"
        counted = self.checks - self.maintenance
        text_ = f"{when}: {percent(value)} available"
        text_ += f", {self.down} of {counted:,} checks failed" if self.down else f", {counted:,} checks passed"
        if self.degraded:
            text_ += f", {self.degraded} slow"
        if self.maintenance:
            text_ += f", {self.maintenance} in maintenance"
        return text_


def percent(value: float | None) -> str:
    if value is None:
        return "no data"
    return "100 %" if value >= 1 else f"{min(value * 100, 99.99):.2f} %"


@dataclass
class Component:
    name: str
    group: str | None
    status: ComponentStatus
    days: list[Day]

    @property
    def availability(self) -> float | None:
        """Over the 90 days."""
        total = Day(self.days[-1].day)
        for d in self.days:
            total.add(d)
        return total.availability

    @property
    def status_text(self) -> str:
        return STATUS_TEXT[self.status]


@dataclass
class PublicUpdate:
    status: str
    body: str
    at: datetime

    @property
    def status_text(self) -> str:
        return UPDATE_TEXT.get(self.status, self.status)


@dataclass
class PublicIncident:
    """An incident as the public sees it: the components it affects, when, and the updates written for them."""

    key: str  # an anchor for the page: the incident's start, not its internal id
    components: list[str]
    started_at: datetime
    resolved_at: datetime | None
    updates: list[PublicUpdate]  # newest first

    @property
    def stage(self) -> str:
        return self.updates[0].status_text if self.updates else "Investigating"


@dataclass
class StatusSummary:
    generated_at: datetime
    indicator: str
    groups: list[tuple[str | None, list[Component]]]
    active: list[PublicIncident] = field(default_factory=list)
    past: list[PublicIncident] = field(default_factory=list)

    @property
    def description(self) -> str:
        return INDICATOR_TEXT[self.indicator]

    @property
    def first_day(self) -> date:
        return (self.generated_at - timedelta(days=DAYS - 1)).date()

    @property
    def today(self) -> date:
        return self.generated_at.date()


def component_status(statuses: list[str]) -> ComponentStatus:
    """A component's status from its services' display statuses (services/service_status.py)."""
    counted = [s for s in statuses if s not in ("paused", "unknown")]
    if not counted:
        return "unknown"
    down = counted.count("down")
    if down and down == len(counted):
        return "major_outage"
    if down:
        return "partial_outage"
    if "degraded" in counted:
        return "degraded_performance"
    if "maintenance" in counted:
        return "under_maintenance"
    return "operational"


def page_indicator(statuses: list[ComponentStatus]) -> str:
    counted = [s for s in statuses if s != "unknown"]
    if not counted:
        return "unknown"
    if counted.count("major_outage") == len(counted):
        return "critical"
    if "major_outage" in counted or "partial_outage" in counted:
        return "major"
    if "degraded_performance" in counted:
        return "minor"
    if "under_maintenance" in counted:
        return "maintenance"
    return "none"


def public_services(session: Session) -> list[tuple[Service, PublicListing]]:
    """The services listed on the public page, with their listing."""
    rows = session.exec(select(Service).where(col(Service.config)["public"].astext.is_not(None)))
    return [(row, PublicListing.model_validate(row.config["public"])) for row in rows]


def status_summary(*, session: Session, now: datetime | None = None) -> StatusSummary:
    """Everything the public status page shows."""
    # To the minute: the page (and its ETag) changes when its data does, not with every render.
    now = (now or utcnow()).replace(second=0, microsecond=0)
    listed = public_services(session)
    ids = [row.id for row, _ in listed if row.id is not None]
    states = {s.service_id: s for s in session.exec(select(ServiceState).where(col(ServiceState.service_id).in_(ids)))}
    windows = current_windows(session, now)
    first_day = (now - timedelta(days=DAYS - 1)).date()
    daily: dict[tuple[str | None, str], dict[date, tuple[int, ...]]] = defaultdict(dict)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    for group, name, bucket, *rollup in session.connection().execute(text(DAY_ROLLUPS), {"ids": ids, "start": start}):
        daily[(group, name)][bucket.astimezone(UTC).date()] = tuple(rollup)  # the driver answers in the session's zone

    members: dict[tuple[str | None, str], list[Service]] = defaultdict(list)
    for row, listing in listed:
        members[(listing.group, listing.name)].append(row)
    components: list[Component] = []
    for (group, name), rows in members.items():
        statuses: list[str] = []
        for row in rows:
            window = next((w for w in windows if w.service in (None, row.name)), None)
            statuses.append(display_status(row.enabled, states.get(row.id or 0), window))
        days = [Day(first_day + timedelta(days=i)) for i in range(DAYS)]
        for d in days:
            counts = daily[(group, name)].get(d.day)
            if counts:
                d.add(counts)
        components.append(Component(name, group, component_status(statuses), days))

    grouped: dict[str | None, list[Component]] = defaultdict(list)
    for component in sorted(components, key=lambda c: c.name.casefold()):
        grouped[component.group].append(component)
    groups = sorted(grouped.items(), key=lambda item: (item[0] is not None, (item[0] or "").casefold()))
    summary = StatusSummary(now, page_indicator([c.status for c in components]), groups)
    component_of = {row.name: listing.name for row, listing in listed}
    summary.active, summary.past = _public_incidents(session, component_of, now)
    return summary


def _public_incidents(
    session: Session, component_of: dict[str, str], now: datetime
) -> tuple[list[PublicIncident], list[PublicIncident]]:
    """Incidents of public services with at least one public update: those not ended, and those ended within
    PAST_INCIDENT_DAYS."""
    if not component_of:
        return [], []
    has_update = select(IncidentPublicUpdate.id).where(IncidentPublicUpdate.incident_id == Incident.id).exists()
    ended_at = Incident.resolved_at  # closed incidents were resolved first; either ends it
    incidents = list(
        session.exec(
            select(Incident)
            .where(col(Incident.service).in_(list(component_of)), has_update)
            .where(
                col(Incident.status).not_in(ENDED_STATUSES)
                | (col(ended_at) >= now - timedelta(days=PAST_INCIDENT_DAYS))
                | (col(Incident.closed_at) >= now - timedelta(days=PAST_INCIDENT_DAYS))
            )
            .order_by(col(Incident.created_at).desc())
            .limit(50)
        )
    )
    updates: dict[int, list[PublicUpdate]] = defaultdict(list)
    if incidents:
        rows = session.exec(
            select(IncidentPublicUpdate)
            .where(col(IncidentPublicUpdate.incident_id).in_([i.id for i in incidents]))
            .order_by(col(IncidentPublicUpdate.id).desc())
        )
        for u in rows:
            if len(updates[u.incident_id]) < UPDATES_PER_INCIDENT:
                updates[u.incident_id].append(PublicUpdate(u.status, u.body, u.created_at))
    active: list[PublicIncident] = []
    past: list[PublicIncident] = []
    for incident in incidents:
        assert incident.id is not None
        ended = incident.status in ENDED_STATUSES
        shown = PublicIncident(
            key=f"incident-{incident.created_at:%Y%m%d%H%M%S}",
            components=[component_of[incident.service]],
            started_at=incident.created_at,
            resolved_at=(incident.resolved_at or incident.closed_at or incident.updated_at) if ended else None,
            updates=updates[incident.id],
        )
        (past if ended else active).append(shown)
    return active, past


def summary_json(summary: StatusSummary) -> dict[str, Any]:
    """The page as JSON (GET /status/api/summary.json), shaped like Statuspage's summary.json."""

    def update(u: PublicUpdate) -> dict[str, Any]:
        return {"status": u.status, "body": u.body, "created_at": u.at.isoformat()}

    def incident(i: PublicIncident) -> dict[str, Any]:
        return {
            "components": i.components, "started_at": i.started_at.isoformat(),
            "resolved_at": i.resolved_at.isoformat() if i.resolved_at else None,
            "status": i.updates[0].status if i.updates else "investigating",
            "updates": [update(u) for u in i.updates],
        }  # fmt: skip

    return {
        "page": {"updated_at": summary.generated_at.isoformat(), "timezone": "UTC", "days": DAYS},
        "status": {"indicator": summary.indicator, "description": summary.description},
        "components": [
            {
                "name": c.name,
                "group": c.group,
                "status": c.status,
                "availability_90d": c.availability,
                "days": [
                    {
                        "date": d.day.isoformat(),
                        "availability": d.availability,
                        "checks": d.checks,
                        "down": d.down,
                        "degraded": d.degraded,
                        "maintenance": d.maintenance,
                    }
                    for d in c.days
                ],
            }
            for _, members in summary.groups
            for c in members
        ],
        "incidents": [incident(i) for i in summary.active],
        "past_incidents": [incident(i) for i in summary.past],
    }


# Public updates: written by responders through the incident page or the API.


def _public_incident(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return incident


def list_public_updates(*, session: Session, incident_id: int) -> list[IncidentPublicUpdate]:
    """An incident's public updates, newest first."""
    _public_incident(session, incident_id)
    query = select(IncidentPublicUpdate).where(IncidentPublicUpdate.incident_id == incident_id)
    return list(session.exec(query.order_by(col(IncidentPublicUpdate.id).desc())))


def is_listed(*, session: Session, service: str) -> bool:
    """Whether the service is on the public status page."""
    row = session.exec(select(Service).where(Service.name == service)).first()
    return row is not None and row.config.get("public") is not None


def post_public_update(
    *, session: Session, incident_id: int, data: PublicUpdateCreate, actor: Actor
) -> IncidentPublicUpdate:
    """Publish an update on the status page, with its timeline event and audit row. Refused (Invalid) when the
    incident's service is not on the public page: nobody would read it."""
    incident = _public_incident(session, incident_id)
    if not is_listed(session=session, service=incident.service):
        raise Invalid(
            f"incident: its service {incident.service!r} is not on the public status page; list it there first "
            "(the service's 'public' setting)"
        )
    update = IncidentPublicUpdate(
        incident_id=incident_id, status=data.status, body=data.body, author_user_id=actor.user_id, author=actor.name
    )
    session.add(update)
    session.flush()
    excerpt = data.body[:200]
    incident_event(
        session, kind="public_update.posted", incident_id=incident_id, actor=actor.name, update_id=update.id,
        status=data.status, excerpt=excerpt,
    )  # fmt: skip
    after = {"update_id": update.id, "status": data.status, "body": data.body}
    record_audit(
        session, actor=actor, action="incident.public_update", target_type="incident", target_id=incident_id,
        after=after,
    )  # fmt: skip
    session.commit()
    session.refresh(update)
    return update


def delete_public_update(*, session: Session, incident_id: int, update_id: int, actor: Actor) -> None:
    """Take an update off the status page (a mistake, something that should not have been said); audited."""
    update = session.get(IncidentPublicUpdate, update_id)
    if update is None or update.incident_id != incident_id:
        raise NotFound(f"incident {incident_id} has no public update {update_id}")
    before = {"update_id": update.id, "status": update.status, "body": update.body}
    session.delete(update)
    incident_event(session, kind="public_update.removed", incident_id=incident_id, actor=actor.name,
                   update_id=update_id)  # fmt: skip
    record_audit(session, actor=actor, action="incident.public_update_removed", target_type="incident",
                 target_id=incident_id, before=before)  # fmt: skip
    session.commit()
