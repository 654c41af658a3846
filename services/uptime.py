"""Reading uptime: one service's or a group's availability and latency over a period, from the rollup that serves
the step (core/uptime.py: minute, hour or day — never the raw results), with the incidents of the period as markers
and, on request, the previous period for comparison. The API (api/routes/uptime.py), the CSV export
(services/uptime_csv.py), the overview and the CLI read through here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Connection, String, any_, bindparam, or_, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col, select

from core.errors import Invalid, NotFound
from core.monitoring import ROLLUP_TABLES, ServiceState
from core.services import Service
from core.settings import Settings
from core.tables import ENDED_STATUSES, utcnow
from core.uptime import (
    BUCKET,
    RANGES,
    Histogram,
    Period,
    PeriodError,
    Resolution,
    align_down,
    align_up,
    availability,
    period,
)

INCIDENTS_MAX = 500
EPOCH_SQL = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"

# One row per point of the period: its buckets (one per service and rollup bucket) summed, and their histograms
# merged cell by cell in plain SQL (about twice as fast as the plpgsql aggregate over many services' rows).
POINTS = """
WITH r AS MATERIALIZED (
  SELECT date_bin(CAST(:step AS interval), bucket, {epoch}) AS t, checks, up, degraded, down, maintenance,
         latency_count, latency_max, hist, updated_at
  FROM {table}
  WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start AND bucket < :end
), p AS (
  SELECT t, sum(checks)::int AS checks, sum(up)::int AS up, sum(degraded)::int AS degraded, sum(down)::int AS down,
         sum(maintenance)::int AS maintenance, sum(latency_count)::int AS latency_count,
         max(latency_max) AS latency_max, max(updated_at) AS modified
  FROM r GROUP BY t
), h AS (
  SELECT t, array_agg(k ORDER BY k) AS ks, array_agg(n ORDER BY k) AS ns
  FROM (SELECT t, k, sum(hist[k])::int AS n FROM r, generate_subscripts(r.hist, 1) AS k GROUP BY 1, 2) c
  GROUP BY t
)
SELECT p.t, checks, up, degraded, down, maintenance, latency_count, latency_max, ks, ns, modified
FROM p LEFT JOIN h ON h.t = p.t ORDER BY p.t
"""
# Each service's totals over the period, read from the coarsest rollups that tile it: whole days from the day rollup,
# whole hours at its edges from the hour rollup, minutes at theirs from the minute rollup.
TILE = """
SELECT service_id, checks, up, degraded, down, maintenance, latency_count, latency_max, hist, updated_at
FROM {table} WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start{n} AND bucket < :end{n}
"""
COUNTS_TILE = """
SELECT service_id, checks, up, degraded, maintenance
FROM {table} WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start{n} AND bucket < :end{n}
"""
COUNTS = "SELECT service_id, sum(checks), sum(up), sum(degraded), sum(maintenance) FROM ({tiles}) t GROUP BY 1"
PER_SERVICE = """
SELECT service_id, checks, up, degraded, down, maintenance, latency_count, latency_max, array_lower(h, 1), h, modified
FROM (
  SELECT service_id, sum(checks)::int AS checks, sum(up)::int AS up, sum(degraded)::int AS degraded,
         sum(down)::int AS down, sum(maintenance)::int AS maintenance, sum(latency_count)::int AS latency_count,
         max(latency_max) AS latency_max, uptime_hist_sum(hist) AS h, max(updated_at) AS modified
  FROM ({tiles}) t
  GROUP BY 1
) s
"""
INCIDENTS = """
SELECT i.id, i.title, i.severity, i.status, i.incident_type, i.service, i.created_at, i.resolved_at, i.closed_at,
       i.description, i.updated_at,
       (SELECT '#' || c.id || ' ' || c.title FROM incident_links l JOIN incidents c ON c.id = l.related_incident_id
        WHERE l.incident_id = i.id AND l.kind = 'caused_by' ORDER BY l.id LIMIT 1) AS caused_by
FROM incidents i
WHERE i.service = ANY(CAST(:names AS text[])) AND i.created_at < :end
  AND (i.status NOT IN ('resolved', 'closed') OR coalesce(i.resolved_at, i.closed_at, i.updated_at) >= :start)
  AND (CAST(:incident_type AS text) IS NULL OR i.incident_type = :incident_type)
  AND (CAST(:severity AS text) IS NULL OR i.severity = :severity)
  AND (CAST(:agent AS text) IS NULL OR EXISTS (
        SELECT 1 FROM workflows w JOIN workflow_steps s ON s.workflow_id = w.workflow_id
        WHERE w.incident_id = i.id AND s.agent = :agent))
ORDER BY i.created_at, i.id
LIMIT :limit
"""


@dataclass
class Totals:
    """Checks by outcome and latency over some buckets."""

    checks: int = 0
    up: int = 0
    degraded: int = 0
    down: int = 0
    maintenance: int = 0
    latency_count: int = 0
    latency_max: float | None = None
    hist: Histogram = field(default_factory=lambda: Histogram({}))

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Totals:
        """From (checks, up, degraded, down, maintenance, latency_count, latency_max, hist lower bound, hist)."""
        checks, up, degraded, down, maint, lcount, lmax, lower, hist = row
        return cls(checks, up, degraded, down, maint, lcount, lmax, Histogram.of(lower, hist))

    def copy(self) -> Totals:
        return Totals(
            self.checks, self.up, self.degraded, self.down, self.maintenance, self.latency_count, self.latency_max,
            Histogram(dict(self.hist.counts)),
        )  # fmt: skip

    def add(self, other: Totals) -> None:
        self.checks += other.checks
        self.up += other.up
        self.degraded += other.degraded
        self.down += other.down
        self.maintenance += other.maintenance
        self.latency_count += other.latency_count
        if other.latency_max is not None:
            self.latency_max = max(self.latency_max or 0.0, other.latency_max)
        self.hist.add(other.hist)

    @property
    def availability(self) -> float | None:
        return availability(checks=self.checks, up=self.up, degraded=self.degraded, maintenance=self.maintenance)

    def public(self) -> dict[str, Any]:
        return {
            "availability": self.availability,
            "checks": self.checks,
            "up": self.up,
            "degraded": self.degraded,
            "down": self.down,
            "maintenance": self.maintenance,
            "p50_ms": self.hist.quantile(0.5, self.latency_max),
            "p95_ms": self.hist.quantile(0.95, self.latency_max),
            "max_ms": self.latency_max,
        }


@dataclass
class Series:
    """A period's points and their total, and when its newest rollup was written."""

    points: list[tuple[datetime, Totals]]
    total: Totals
    modified: datetime | None

    def public(self, shift: timedelta = timedelta(0)) -> dict[str, Any]:
        return {"summary": self.total.public(), "points": [_point(t + shift, p) for t, p in self.points]}


def _point(t: datetime, totals: Totals) -> dict[str, Any]:
    return {"t": t.astimezone(UTC).isoformat(), **totals.public()}


def resolve_period(
    *, settings: Settings, range_: str, step: str, end: datetime | None, now: datetime | None = None, services: int = 1
) -> Period:
    """The period asked for, or Invalid naming the query field (unknown range, a step too fine); step=auto over
    many `services` reads a coarser rollup (core/uptime.py: auto_step)."""
    try:
        return period(
            range_=range_,
            step=step,
            end=end,
            now=now or utcnow(),
            kept_days=settings.uptime_kept_days(),  # type: ignore[arg-type]
            services=services,
        )
    except PeriodError as err:
        raise Invalid(f"query.{err.field}: {err}") from None


def series(
    conn: Connection, *, service_ids: Sequence[int], span: Period, part: tuple[datetime, datetime] | None = None
) -> Series:
    """The period's points over the services (their buckets summed), from the rollup of its resolution (only those
    in `part`, step-aligned, when given)."""
    start, end = part or (span.start, span.end)
    rows = conn.execute(
        text(POINTS.format(table=ROLLUP_TABLES[span.resolution], epoch=EPOCH_SQL)),
        {"step": span.step_delta, "ids": list(service_ids), "start": start, "end": end},
    ).all()
    total = Totals()
    points = []
    modified = None
    for row in rows:
        ks, ns = row[8] or [], row[9] or []
        checks, up, degraded, down, maintenance, latency_count, latency_max = row[1:8]
        totals = Totals(
            checks,
            up,
            degraded,
            down,
            maintenance,
            latency_count,
            latency_max,
            Histogram(dict(zip(ks, ns, strict=True))),
        )
        points.append((row[0], totals))
        total.add(totals)
        modified = row[10] if modified is None else max(modified, row[10])
    return Series(points, total, modified)


def tiles(start: datetime, end: datetime, finest: Resolution) -> list[tuple[Resolution, datetime, datetime]]:
    """[start, end) as the fewest rollup buckets: whole days inside, whole hours and minutes at the edges (never
    finer than `finest`, the period's own resolution, to whose buckets start and end are aligned)."""
    order: list[Resolution] = ["day", "hour", "minute"]
    out: list[tuple[Resolution, datetime, datetime]] = []

    def cover(lo: datetime, hi: datetime, level: int) -> None:
        if lo >= hi:
            return
        resolution = order[level]
        if resolution == finest:
            out.append((resolution, lo, hi))
            return
        inner_lo, inner_hi = align_up(lo, BUCKET[resolution]), align_down(hi, BUCKET[resolution])
        if inner_lo >= inner_hi:
            cover(lo, hi, level + 1)
            return
        out.append((resolution, inner_lo, inner_hi))
        cover(lo, inner_lo, level + 1)
        cover(inner_hi, hi, level + 1)

    cover(start, end, 0)
    return out


def per_service(
    conn: Connection, *, service_ids: Sequence[int], span: Period, part: tuple[datetime, datetime] | None = None
) -> dict[int, Totals]:
    """Each service's totals over the period (or the step-aligned `part` of it)."""
    start, end = part or (span.start, span.end)
    parts = tiles(start, end, span.resolution)
    union = " UNION ALL ".join(TILE.format(table=ROLLUP_TABLES[r], n=i) for i, (r, _, _) in enumerate(parts))
    params: dict[str, Any] = {"ids": list(service_ids)}
    for i, (_, lo, hi) in enumerate(parts):
        params[f"start{i}"], params[f"end{i}"] = lo, hi
    rows = conn.execute(text(PER_SERVICE.format(tiles=union)), params).all()
    return {row[0]: Totals.of_row(row[1:10]) for row in rows}


# ---- the past of a graph, computed once --------------------------------------------------------------------------

# What a part of the rollups holds, cheap to read (no histogram): a result written late into a past bucket adds to its
# checks, and pruning or a deleted service removes rows, so an unchanged fingerprint means unchanged rows.
FINGERPRINT_TILE = """
SELECT {n} AS part, count(*), coalesce(sum(checks), 0)
FROM {table} WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start{n} AND bucket < :end{n}
"""
SETTLED_KEPT = 32  # cached graph pasts per process (a 1,000-service one is about 1 MB)


@dataclass
class Settled:
    """A graph's whole past points (and each service's totals over them), with the fingerprint they were read at."""

    fingerprint: tuple[tuple[int, int, int], ...]
    points: Series
    totals: dict[int, Totals] | None


class SettledCache:
    """The past points of uptime graphs by what they cover, so that a graph over many services merges the latency
    histograms of its past once, not on every request (bench.uptime: the all-services 30-day graph). Every use
    first reads the rollups' fingerprint (row and check counts of each part it covers): a late result, a pruned
    row or a changed service list reads again, so an answer is always what Postgres holds. Per process."""

    def __init__(self, kept: int = SETTLED_KEPT) -> None:
        self._kept = kept
        self._entries: OrderedDict[tuple[Any, ...], Settled] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # full reads of a past (tests and the bench count them)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, key: tuple[Any, ...], fingerprint: tuple[tuple[int, int, int], ...]) -> Settled | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None or found.fingerprint != fingerprint:
                return None
            self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], value: Settled) -> None:
        with self._lock:
            self.reads += 1
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._kept:
                self._entries.popitem(last=False)


SETTLED = SettledCache()


def _fingerprint(
    conn: Connection, ids: Sequence[int], parts: Sequence[tuple[Resolution, datetime, datetime]]
) -> tuple[tuple[int, int, int], ...]:
    union = " UNION ALL ".join(
        FINGERPRINT_TILE.format(table=ROLLUP_TABLES[r], n=i) for i, (r, _, _) in enumerate(parts)
    )
    params: dict[str, Any] = {"ids": list(ids)}
    for i, (_, lo, hi) in enumerate(parts):
        params[f"start{i}"], params[f"end{i}"] = lo, hi
    return tuple(
        sorted((int(n), int(rows), int(checks)) for n, rows, checks in conn.execute(text(union), params).all())
    )


def _joined(past: Series, fresh: Series) -> Series:
    total = past.total.copy()
    total.add(fresh.total)
    modified = _latest(past.modified, fresh.modified)
    return Series([*past.points, *fresh.points], total, modified)


def _summed(past: dict[int, Totals], fresh: dict[int, Totals]) -> dict[int, Totals]:
    out = {sid: t.copy() for sid, t in past.items()}
    for sid, t in fresh.items():
        if sid in out:
            out[sid].add(t)
        else:
            out[sid] = t
    return out


def graph(
    conn: Connection, *, service_ids: Sequence[int], span: Period, with_totals: bool, now: datetime | None = None,
    cache: SettledCache = SETTLED,
) -> tuple[Series, dict[int, Totals]]:  # fmt: skip
    """The period's points over the services and (with_totals) each service's totals: its whole past points —
    those before the step that holds `now` — from the cache when their rollups' fingerprint is unchanged, the rest
    read now."""
    now = now or utcnow()
    cut = min(max(align_down(now, span.step_delta), span.start), span.end)
    ids = sorted(service_ids)
    past: Settled | None = None
    if cut > span.start:
        key = (span.resolution, span.step, span.start, cut, with_totals, tuple(ids))
        # The period's own rollup suffices: every write adds to a check's minute, hour and day rows in one statement,
        # and a period is never longer than its own rollup is kept (core/uptime.py: period), so no coarser row the
        # totals read is pruned while the period's rows stay.
        fingerprint = _fingerprint(conn, ids, [(span.resolution, span.start, cut)])
        past = cache.get(key, fingerprint)
        if past is None:
            points = series(conn, service_ids=ids, span=span, part=(span.start, cut))
            totals = per_service(conn, service_ids=ids, span=span, part=(span.start, cut)) if with_totals else None
            past = Settled(fingerprint, points, totals)
            cache.put(key, past)
    if cut < span.end:
        fresh = series(conn, service_ids=ids, span=span, part=(cut, span.end))
        fresh_totals = per_service(conn, service_ids=ids, span=span, part=(cut, span.end)) if with_totals else {}
    else:
        fresh, fresh_totals = Series([], Totals(), None), {}
    if past is None:
        return fresh, fresh_totals
    return _joined(past.points, fresh), _summed(past.totals or {}, fresh_totals)


@dataclass(frozen=True)
class IncidentFilter:
    incident_type: str | None = None
    severity: str | None = None
    agent: str | None = None


def incident_markers(
    conn: Connection, *, names: Sequence[str], span: Period, filters: IncidentFilter, now: datetime
) -> tuple[list[dict[str, Any]], datetime | None]:
    """The services' incidents open at some time in the period (opened → resolved), and the latest change to one."""
    rows = conn.execute(
        text(INCIDENTS),
        {"names": list(names), "start": span.start, "end": span.end, "incident_type": filters.incident_type,
         "severity": filters.severity, "agent": filters.agent, "limit": INCIDENTS_MAX},
    ).all()  # fmt: skip
    markers = []
    modified = None
    for r in rows:
        ended = r.resolved_at or r.closed_at or r.updated_at if r.status in ENDED_STATUSES else None
        cause = f"caused by {r.caused_by}" if r.caused_by else (r.description.strip().splitlines() or [None])[0]
        markers.append({
            "id": r.id, "title": r.title, "severity": r.severity, "status": r.status,
            "incident_type": r.incident_type, "service": r.service, "opened_at": r.created_at.isoformat(),
            "resolved_at": ended.isoformat() if ended else None,
            "duration_seconds": round(max(0.0, ((ended or now) - r.created_at).total_seconds()), 1),
            "cause": cause[:200] if cause else None, "url": f"/incidents/{r.id}",
        })  # fmt: skip
        modified = r.updated_at if modified is None else max(modified, r.updated_at)
    return markers, modified


def _as_of() -> datetime:
    """Now, to the minute: an open incident's duration counts to it, so an answer (and its ETag) stays the same
    within a minute while nothing else changes."""
    return utcnow().replace(second=0, microsecond=0)


def _service(session: Session, name: str) -> Service:
    row = session.exec(select(Service).where(Service.name == name)).first()
    if row is None:
        raise NotFound(f"no service named {name[:100]!r}")
    return row


def _latest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _compare(current: Series, previous: Series, span: Period) -> dict[str, Any]:
    now, before = current.total.public(), previous.total.public()

    def diff(key: str) -> float | None:
        a, b = now[key], before[key]
        return None if a is None or b is None else round(a - b, 6)

    return {
        "previous": {
            "start": span.previous().start.isoformat(),
            "end": span.previous().end.isoformat(),
            # Its points' times are shifted onto this period, so the two overlay.
            **previous.public(shift=span.end - span.start),
        },
        "delta": {"availability": diff("availability"), "p95_ms": diff("p95_ms")},
    }


def _head(span: Period) -> dict[str, Any]:
    return {
        "range": span.range,
        "step": span.step,
        "resolution": span.resolution,
        "start": span.start.isoformat(),
        "end": span.end.isoformat(),
        "timezone": "UTC",
    }


def service_uptime(
    *, session: Session, name: str, span: Period, compare: bool = False, filters: IncidentFilter = IncidentFilter(),
) -> tuple[dict[str, Any], datetime | None]:  # fmt: skip
    """One service's uptime over the period (the contract's answer) and when what it shows last changed."""
    service = _service(session, name)
    assert service.id is not None
    conn = session.connection()
    current = series(conn, service_ids=[service.id], span=span)
    markers, changed = incident_markers(conn, names=[name], span=span, filters=filters, now=_as_of())
    answer = {"service": name, **_head(span), **current.public(), "incidents": markers}
    modified = _latest(current.modified, changed)
    if compare:
        previous = series(conn, service_ids=[service.id], span=span.previous())
        answer.update(_compare(current, previous, span))
        modified = _latest(modified, previous.modified)
    return answer, modified


class ChosenService(NamedTuple):
    id: int
    name: str
    enabled: bool


def chosen_services(session: Session, *, group: str | None, names: Sequence[str]) -> list[ChosenService]:
    """Every service, or those of a group (a tag or a team), or those named (each must exist): by name, only the
    columns the graphs need (at 10,000 services, reading whole rows with their JSON config cost 370 ms)."""
    query = select(Service.id, Service.name, Service.enabled).order_by(col(Service.name))
    if names:
        query = query.where(col(Service.name) == any_(bindparam("names", list(names), type_=ARRAY(String))))
    if group:
        query = query.where(
            or_(col(Service.config)["tags"].contains([group]), col(Service.config)["team"].astext == group)
        )
    rows = [ChosenService(i or 0, n, e) for i, n, e in session.exec(query).all()]
    if names:
        missing = sorted(set(names) - {r.name for r in rows})
        if missing and not group:
            raise NotFound(f"no service named {missing[0][:100]!r}")
        if missing:  # named and in the group: a name that exists outside it is not missing
            known = set(session.exec(select(Service.name).where(col(Service.name).in_(missing))).all())
            if set(missing) - known:
                raise NotFound(f"no service named {sorted(set(missing) - known)[0][:100]!r}")
    return rows


def group_uptime(
    *, session: Session, span: Period, group: str | None = None, names: Sequence[str] = (), compare: bool = False,
    filters: IncidentFilter = IncidentFilter(), chosen: list[ChosenService] | None = None, per_service: bool = True,
) -> tuple[dict[str, Any], datetime | None]:  # fmt: skip
    """All services' (or a group's) uptime over the period: the points summed over them, each service's summary and
    status (`per_service`; at 10,000 services most of the time), their incidents. `chosen`: the services, when the
    caller has read them already."""
    rows = chosen if chosen is not None else chosen_services(session, group=group, names=names)
    ids = [r.id for r in rows]
    conn = session.connection()
    current, totals = graph(conn, service_ids=ids, span=span, with_totals=per_service)
    markers, changed = incident_markers(conn, names=[r.name for r in rows], span=span, filters=filters, now=_as_of())
    answer: dict[str, Any] = {**_head(span), "group": group, **current.public()}
    if per_service:
        query = select(ServiceState.service_id, ServiceState.status).where(_ids_in(ids))
        states: dict[int, str] = dict(session.exec(query).all())
        answer["services"] = [
            {
                "name": r.name,
                "status": states.get(r.id, "unknown") if r.enabled else "paused",
                "summary": totals.get(r.id, Totals()).public(),
            }
            for r in rows
        ]
    answer["incidents"] = markers
    modified = _latest(current.modified, changed, _state_changed(session, ids))
    if compare:
        previous, _ = graph(conn, service_ids=ids, span=span.previous(), with_totals=False)
        answer.update(_compare(current, previous, span))
        modified = _latest(modified, previous.modified)
    return answer, modified


def _ids_in(ids: Sequence[int]) -> Any:
    """service_states rows of these services: one array parameter, not one bind parameter per service."""
    return col(ServiceState.service_id) == any_(bindparam("state_ids", list(ids), type_=ARRAY(BigInteger)))


def _state_changed(session: Session, ids: Sequence[int]) -> datetime | None:
    if not ids:
        return None
    return session.exec(
        select(ServiceState.last_change_at)
        .where(_ids_in(ids), col(ServiceState.last_change_at).is_not(None))
        .order_by(col(ServiceState.last_change_at).desc())
        .limit(1)
    ).first()


def availability_by_service(
    *, session: Session, service_ids: Sequence[int], ranges: Sequence[str] = ("24h", "7d", "30d"),
    now: datetime | None = None,
) -> dict[int, dict[str, float | None]]:  # fmt: skip
    """Each service's availability over the last 24 h / 7 d / 30 d (whole hours: day rollups inside, hour rollups at
    the edges; counts only): one query per range for any number of services, for the services list."""
    now = now or utcnow()
    end = align_up(now, timedelta(hours=1))
    out: dict[int, dict[str, float | None]] = {sid: {} for sid in service_ids}
    conn = session.connection()
    for range_ in ranges:
        # Whole days from the day rollups, the edge hours from the hour rollups: a 30-day window reads 30 rows a
        # service, not 720 (bench.uptime: 276 → 34 ms for 1,000 services). No histogram: counts only.
        parts = tiles(end - RANGES[range_], end, "hour")
        union = " UNION ALL ".join(
            COUNTS_TILE.format(table=ROLLUP_TABLES[resolution], n=i) for i, (resolution, _, _) in enumerate(parts)
        )
        params: dict[str, Any] = {"ids": list(service_ids)}
        for i, (_, lo, hi) in enumerate(parts):
            params[f"start{i}"], params[f"end{i}"] = lo, hi
        rows = conn.execute(text(COUNTS.format(tiles=union)), params).all()
        found = {sid: availability(checks=c, up=u, degraded=d, maintenance=m) for sid, c, u, d, m in rows}
        for sid in service_ids:
            out[sid][range_] = found.get(sid)
    return out
