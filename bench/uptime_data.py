"""bench.uptime's data: N services × D days of 60-second checks loaded as the rollups the product keeps (minute rows
for the minute retention, hour and day rows for all D days) plus incidents, maintenance windows and service states,
all in Postgres (INSERT … SELECT over generate_series; no Python loop over rows).

Every check is a pure function of (service id, minute): an outage minute (from the incidents) is down, a maintenance
minute is silenced, else up (0.3 % degraded: 2.6-4.1 s) with a latency around the service's own base (integer ms, so
sums are exact). Minute rows are the checks themselves; hour and day rows are built from the same checks by the
monitor's own upsert (activities/monitoring/rollups.UPSERT). `write_path_check` then runs the real write path
(raw results stored, rollups.add_results / add_silenced per minute, as the monitor's flushes do) for a sample of
services over the last hours, and compares their rollups over the whole period with the generator's.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from activities.monitoring import rollups
from core.monitoring import ROLLUP_TABLES
from core.services import HttpCheck, ServiceBase

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SAMPLE_SERVICES = 12
CURRENTLY_DOWN = 3
PAUSED_EVERY = 100  # every 100th service is paused
MAINTAINED_EVERY = 25  # every 25th service has a weekly one-hour maintenance window
TEAMS = 8

# (service_id, epoch minute) → maint, status, ms; `{pairs}` yields service_id, m, base (the service's base latency).
CHECKS = """
SELECT p.service_id, p.m, mk.kind = 'maintenance' AS maint,
       CASE WHEN mk.kind = 'down' THEN 'down' WHEN p.h < 300 THEN 'degraded' ELSE 'up' END AS status,
       CASE WHEN mk.kind IS NOT NULL THEN NULL
            WHEN p.h < 300 THEN 2600 + p.h * 5
            WHEN p.h < 1300 THEN p.base * (2 + p.h % 4)
            ELSE p.base * (80 + p.h % 60) / 100 END::float8 AS ms
FROM (SELECT q.service_id, q.m, q.base, abs(hashint8extended(q.service_id * 100000000 + q.m, 7)) % 100000 AS h
      FROM ({pairs}) q) p
LEFT JOIN bench_marks mk ON mk.service_id = p.service_id AND mk.m = p.m
"""
PAIRS = """
SELECT s.id AS service_id, g.m, 20 + abs(hashint8(s.id)) % 230 AS base
FROM services s CROSS JOIN generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS g(m)
WHERE s.id = ANY(CAST(:ids AS bigint[])) AND NOT (s.id = ANY(CAST(:skip_ids AS bigint[])) AND g.m >= :skip_from)
"""
# The shape of the write path's `cells` (rollups.CELLS): one row per check here.
CELLS = """
CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS
SELECT service_id, {epoch} + m * interval '1 minute' AS bucket,
       CASE WHEN maint OR ms IS NULL THEN NULL WHEN ms < 1 THEN 0
            ELSE least(69, 1 + floor(4 * ln(ms) / ln(2))::int) END AS k,
       1 AS checks,
       (status = 'up' AND maint IS NOT TRUE)::int AS up,
       (status = 'degraded' AND maint IS NOT TRUE)::int AS degraded,
       (status = 'down' AND maint IS NOT TRUE)::int AS down,
       (maint IS TRUE)::int AS maintenance,
       CASE WHEN maint THEN 0 ELSE coalesce(ms, 0) END AS latency_sum,
       (ms IS NOT NULL AND maint IS NOT TRUE)::int AS latency_count,
       CASE WHEN maint THEN NULL ELSE ms END AS latency_max
FROM ({checks}) c
"""
EPOCH_SQL = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
MINUTES = """
INSERT INTO uptime_rollups_minute (service_id, bucket, checks, up, degraded, down, maintenance, latency_sum,
                                   latency_count, latency_max, hist, updated_at)
SELECT service_id, bucket, checks, up, degraded, down, maintenance, latency_sum, latency_count, latency_max,
       CASE WHEN k IS NULL THEN NULL ELSE array_fill(1, ARRAY[1], ARRAY[k]) END, now()
FROM cells WHERE bucket >= :minute_from
ORDER BY bucket, service_id
"""  # in time order, as the monitor appends them

SERVICES_STATES = """
INSERT INTO service_states (service_id, status, consecutive_failures, consecutive_passes, episode, failing_since,
                            incident_id, next_check_at, last_checked_at, last_change_at, last_error)
SELECT id, 'up', 0, 1 + abs(hashint8(id)) % 5000, 1 + abs(hashint8(id)) % 7, NULL, NULL, :now + interval '1 day',
       :now, :now - (1 + abs(hashint8(id)) % 5000) * interval '1 minute', NULL
FROM services
"""
WINDOWS = """
INSERT INTO maintenance_windows (service, starts_at, ends_at, reason, created_by, created_at)
SELECT s.name, w.starts_at, w.starts_at + interval '1 hour', 'weekly patching', 'bench', w.starts_at - interval '1 day'
FROM services s
CROSS JOIN LATERAL (
  SELECT date_trunc('hour', CAST(:start AS timestamptz)) + (abs(hashint8(s.id)) % 168) * interval '1 hour'
         + wk * interval '7 days' AS starts_at
  FROM generate_series(0, :weeks) wk
) w
WHERE s.id % :every = 3 AND w.starts_at >= :start AND w.starts_at + interval '1 hour' <= :quiet_from
"""
MARK_WINDOWS = """
INSERT INTO bench_marks (service_id, m, kind)
SELECT s.id, g.m, 'maintenance'
FROM maintenance_windows w JOIN services s ON s.name = w.service
CROSS JOIN generate_series(extract(epoch FROM w.starts_at)::bigint / 60, extract(epoch FROM w.ends_at)::bigint / 60 - 1)
     AS g(m)
ON CONFLICT DO NOTHING
"""
# Outages (most incidents: service_down, opened after 3 failed checks, resolved a minute after the last) and other
# incidents (no failed check); a few services are noisy. The designated ones (sample, currently down) come after.
INCIDENTS = """
WITH o AS (
  SELECT i, abs(hashint8extended(i, 11)) % 1000000 AS a, abs(hashint8extended(i, 12)) AS b,
         abs(hashint8extended(i, 13)) AS c
  FROM generate_series(1, :n) AS i
), v AS (
  SELECT i, :first_id + floor(:services * power(a / 1000000.0, 2))::bigint AS service_id,
         :lo + b % (:span - 240) AS m0,
         CASE WHEN c % 100 < 3 THEN 60 + c % 240 ELSE 3 + c % 30 END AS minutes,
         CASE WHEN c % 10 < 8 THEN 'service_down' ELSE (ARRAY['latency', 'deploy', 'error_rate'])[1 + c % 3] END
           AS incident_type,
         CASE WHEN c % 20 = 0 THEN 'P1' WHEN c % 5 = 0 THEN 'P2' WHEN c % 2 = 0 THEN 'P3' ELSE 'P4' END AS severity,
         CASE WHEN c % 10 < 7 THEN 'closed' ELSE 'resolved' END AS status
  FROM o
)
INSERT INTO bench_outages (service_id, m0, minutes, incident_type, severity, status)
SELECT service_id, m0, minutes, incident_type, severity, status FROM v
"""
INSERT_INCIDENTS = """
INSERT INTO incidents (title, description, service, service_url, severity, status, incident_type, playbook_id,
    playbook_version, workflow_id, workflow_runs, idempotency_key, created_at, updated_at, resolved_at,
    acknowledged_at, closed_at)
SELECT CASE WHEN o.incident_type = 'service_down' THEN s.name || ' is down' ELSE s.name || ': ' || o.incident_type END,
       'Bench incident ' || o.id || ' on ' || s.name || '. Runbook: check the dashboards and recent deploys.',
       s.name, s.config -> 'check' ->> 'url', o.severity, o.status, o.incident_type, 'default', 1,
       'bench-incident-' || o.id, 1, NULL, t.opened, coalesce(t.ended, t.opened) + interval '1 minute',
       CASE WHEN o.status IN ('resolved', 'closed') THEN t.ended END,
       t.opened + interval '2 minutes',
       CASE WHEN o.status = 'closed' THEN t.ended + interval '1 day' END
FROM bench_outages o JOIN services s ON s.id = o.service_id
CROSS JOIN LATERAL (
  SELECT {epoch} + (o.m0 + CASE WHEN o.incident_type = 'service_down' THEN 3 ELSE 0 END) * interval '1 minute'
           AS opened,
         CASE WHEN o.status IN ('resolved', 'closed') THEN {epoch} + (o.m0 + o.minutes + 1) * interval '1 minute' END
           AS ended
) t
ORDER BY t.opened
"""
MARK_OUTAGES = """
INSERT INTO bench_marks (service_id, m, kind)
SELECT o.service_id, g.m, 'down'
FROM bench_outages o CROSS JOIN generate_series(o.m0, least(o.m0 + o.minutes, :hi) - 1) AS g(m)
WHERE o.incident_type = 'service_down'
ON CONFLICT DO NOTHING
"""
DOWN_NOW = """
UPDATE service_states st SET status = 'down', consecutive_failures = :now_m - o.m0, consecutive_passes = 0,
  failing_since = {epoch} + o.m0 * interval '1 minute', incident_id = i.id,
  last_change_at = {epoch} + o.m0 * interval '1 minute', last_error = 'connection refused'
FROM bench_outages o JOIN incidents i ON i.workflow_id = 'bench-incident-' || o.id
WHERE o.status IN ('open', 'in_progress') AND st.service_id = o.service_id
"""


@dataclass
class Plan:
    """What to load: the period [start, now) in whole minutes, which part gets minute rows, the write path's
    sample."""

    services: int
    days: int
    incidents: int
    now: datetime
    minute_days: int
    sample_hours: float

    @property
    def now_m(self) -> int:
        return int((self.now - EPOCH).total_seconds()) // 60

    @property
    def start_m(self) -> int:
        return self.now_m - self.days * 1440

    @property
    def minute_from(self) -> datetime:
        return self.now - timedelta(days=min(self.minute_days, self.days))

    @property
    def sample_from_m(self) -> int:
        return self.now_m - round(self.sample_hours * 60)

    def slices(self) -> list[tuple[int, int]]:
        """[lo, hi) in epoch minutes, one per UTC day (so no two slices share an hour or day rollup)."""
        out = []
        lo = self.start_m
        while lo < self.now_m:
            hi = min(self.now_m, (lo // 1440 + 1) * 1440)
            out.append((lo, hi))
            lo = hi
        return out


def minute_at(m: int) -> datetime:
    return EPOCH + timedelta(minutes=m)


def create_services(conn: Connection, plan: Plan) -> list[int]:
    """The services (contiguous ids), their states, maintenance windows and incidents, and the marks (down or
    maintenance minutes) the generator reads; the ids of the write path's sample."""
    rows = []
    for n in range(plan.services):
        config = ServiceBase(
            check=HttpCheck(url=f"http://127.0.0.1:9/t/{n}"), interval_seconds=60, timeout_seconds=5,
            tags=[f"tier-{1 + n % 3}", "bench"], team=f"team-{n % TEAMS}",
        )  # fmt: skip
        rows.append({"name": f"svc-{n:04d}", "config": config.model_dump_json(), "enabled": n % PAUSED_EVERY != 99})
    conn.execute(
        text(
            "INSERT INTO services (name, config, enabled, created_by, created_at, updated_at) "
            "VALUES (:name, CAST(:config AS jsonb), :enabled, 'bench', :created, :created)"
        ),
        [{**r, "created": minute_at(plan.start_m)} for r in rows],
    )
    ids = list(conn.execute(text("SELECT id FROM services ORDER BY id")).scalars())
    assert ids == list(range(ids[0], ids[0] + plan.services)), "services' ids are not contiguous"
    first = ids[0]
    conn.execute(text(SERVICES_STATES), {"now": plan.now})
    conn.execute(
        text(
            "CREATE UNLOGGED TABLE bench_marks (service_id bigint, m bigint, kind text, PRIMARY KEY (service_id, m));"
            "CREATE UNLOGGED TABLE bench_outages (id bigserial PRIMARY KEY, service_id bigint, m0 bigint, "
            "minutes int, incident_type text, severity text, status text)"
        )
    )
    sample = ids[:SAMPLE_SERVICES]
    quiet_from = minute_at(plan.sample_from_m - 60)
    weeks = plan.days // 7 + 1
    conn.execute(
        text(WINDOWS),
        {"start": minute_at(plan.start_m), "weeks": weeks, "every": MAINTAINED_EVERY, "quiet_from": quiet_from},
    )
    # Designated: a maintenance window and an outage inside the write path's sample, services down right now.
    s = plan.sample_from_m
    conn.execute(
        text(
            "INSERT INTO maintenance_windows (service, starts_at, ends_at, reason, created_by, created_at) "
            "VALUES ((SELECT name FROM services WHERE id = :id), :a, :b, 'bench: inside the sample', 'bench', :a)"
        ),
        {"id": sample[1 % len(sample)], "a": minute_at(s + 20), "b": minute_at(s + 50)},
    )
    conn.execute(text(MARK_WINDOWS))
    designated = [(sample[2 % len(sample)], s + 60, 15, "resolved")]
    designated += [
        (first + plan.services // 2 + k, plan.now_m - 25 - 10 * k, 10_000, "open")
        for k in range(min(CURRENTLY_DOWN, plan.services - SAMPLE_SERVICES))
    ]
    conn.execute(
        text(INCIDENTS),
        {"n": max(0, plan.incidents - len(designated)), "first_id": first, "services": plan.services,
         "lo": plan.start_m, "span": plan.days * 1440},
    )  # fmt: skip
    conn.execute(
        text(
            "INSERT INTO bench_outages (service_id, m0, minutes, incident_type, severity, status) "
            "VALUES (:sid, :m0, :minutes, 'service_down', 'P2', :status)"
        ),
        [{"sid": sid, "m0": m0, "minutes": minutes, "status": st} for sid, m0, minutes, st in designated],
    )
    conn.execute(text(INSERT_INCIDENTS.format(epoch=EPOCH_SQL)))
    conn.execute(text(MARK_OUTAGES), {"hi": plan.now_m})
    conn.execute(text(DOWN_NOW.format(epoch=EPOCH_SQL)), {"now_m": plan.now_m})
    return sample


def _cells(conn: Connection, name: str, params: dict[str, Any]) -> None:
    checks = CHECKS.format(pairs=PAIRS)
    conn.execute(text(CELLS.format(name=name, epoch=EPOCH_SQL, checks=checks)), params)


def load_slice(engine: Engine, plan: Plan, ids: list[int], sample: list[int], lo: int, hi: int) -> None:
    """One UTC day of every service: its checks as minute rows (within the minute retention), hour and day rows
    by the monitor's upsert; the sample's last hours are left to the write path."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL work_mem = '256MB'"))
        params = {"lo": lo, "hi": hi, "ids": ids, "skip_ids": sample, "skip_from": plan.sample_from_m}
        _cells(conn, "cells", params)
        if minute_at(hi) > plan.minute_from:
            conn.execute(text(MINUTES), {"minute_from": plan.minute_from})
        for unit in ("hour", "day"):
            conn.execute(text(rollups.UPSERT.format(table=ROLLUP_TABLES[unit], unit=unit)))


def load(engine: Engine, plan: Plan, jobs: int) -> tuple[list[int], float]:
    """Everything, `jobs` slices at once; (the sample's service ids, seconds it took)."""
    started = time.perf_counter()
    with engine.begin() as conn:
        sample = create_services(conn, plan)
        ids = list(conn.execute(text("SELECT id FROM services ORDER BY id")).scalars())
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(load_slice, engine, plan, ids, sample, lo, hi) for lo, hi in plan.slices()]:
            future.result()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in [*ROLLUP_TABLES.values(), "incidents", "services", "service_states", "maintenance_windows"]:
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))
        conn.execute(text("CHECKPOINT"))
    return sample, time.perf_counter() - started


# ---- the write path, for a sample ---------------------------------------------------------------------------------

RAW = """
INSERT INTO uptime_metrics (service_id, scheduled_at, checked_at, status, response_time_ms, status_code, error,
                            error_kind)
SELECT c.service_id, t.at, t.at + interval '5 milliseconds', c.status, c.ms,
       CASE WHEN c.status = 'down' THEN NULL ELSE 200 END,
       CASE WHEN c.status = 'down' THEN 'connection refused' END, CASE WHEN c.status = 'down' THEN 'connect' END
FROM ({checks}) c
CROSS JOIN LATERAL (SELECT {epoch} + c.m * interval '1 minute' + (abs(hashint8(c.service_id)) % 60000)
                           * interval '1 millisecond' AS at) t
WHERE c.maint IS NOT TRUE
RETURNING service_id, scheduled_at
"""
SILENCED = """
SELECT c.service_id, {epoch} + c.m * interval '1 minute' + (abs(hashint8(c.service_id)) % 60000)
                     * interval '1 millisecond'
FROM ({checks}) c WHERE c.maint
"""
COMPARE = """
SELECT count(*) AS rows,
       count(*) FILTER (WHERE e.checks IS NULL OR r.checks IS NULL
         OR (e.checks, e.up, e.degraded, e.down, e.maintenance, e.latency_sum, e.latency_count, e.latency_max, e.hist)
            IS DISTINCT FROM
            (r.checks, r.up, r.degraded, r.down, r.maintenance, r.latency_sum, r.latency_count, r.latency_max, r.hist))
         AS different
FROM expected_{unit} e
FULL JOIN (SELECT * FROM {table} WHERE service_id = ANY(CAST(:ids AS bigint[]))) r USING (service_id, bucket)
"""
SAMPLE_TOTALS = """
SELECT count(*), sum(up), sum(degraded), sum(down), sum(maintenance) FROM expected_minute
WHERE bucket >= :sample_from
"""


@dataclass
class WriteCheck:
    services: int
    hours: float
    checks: tuple[int, int, int, int, int]  # checks, up, degraded, down, maintenance in the sample window
    rows: dict[str, tuple[int, int]]  # unit → (rows compared, rows different)
    seconds: float

    @property
    def equal(self) -> bool:
        return all(different == 0 for _, different in self.rows.values())


def write_path_check(engine: Engine, plan: Plan, sample: list[int]) -> WriteCheck:
    """The sample's checks over its window through the monitor's write path, one flush per minute: each stored as a
    raw result and added by rollups.add_results in the same transaction, or (in a maintenance window) counted by
    rollups.add_silenced as the monitor's skip does. Then its rollups over the whole period are compared, row by row
    and column by column (the histogram's bounds included), with the generator's."""
    started = time.perf_counter()
    checks = CHECKS.format(pairs=PAIRS)
    for m in range(plan.sample_from_m, plan.now_m):
        params = {"lo": m, "hi": m + 1, "ids": sample, "skip_ids": [], "skip_from": 0}
        with engine.begin() as conn:
            stored = conn.execute(text(RAW.format(checks=checks, epoch=EPOCH_SQL)), params).all()
            rollups.add_results(conn, {(sid, at) for sid, at in stored})
            for sid, at in conn.execute(text(SILENCED.format(checks=checks, epoch=EPOCH_SQL)), params).all():
                rollups.add_silenced(conn, sid, at)
    rows = {}
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL work_mem = '256MB'"))
        params = {"lo": plan.start_m, "hi": plan.now_m, "ids": sample, "skip_ids": [], "skip_from": 0}
        _cells(conn, "all_cells", params)
        for unit, table in ROLLUP_TABLES.items():
            conn.execute(text(f"CREATE TEMPORARY TABLE expected_{unit} (LIKE {table} INCLUDING ALL) ON COMMIT DROP"))
            source = "all_cells" if unit != "minute" else "(SELECT * FROM all_cells WHERE bucket >= :minute_from)"
            upsert = rollups.UPSERT.format(table=f"expected_{unit}", unit=unit)
            params = {"minute_from": plan.minute_from} if unit == "minute" else {}
            conn.execute(text(upsert.replace("FROM cells", f"FROM {source}")), params)
            total, different = conn.execute(text(COMPARE.format(unit=unit, table=table)), {"ids": sample}).one()
            rows[unit] = (total, different)
        totals = conn.execute(text(SAMPLE_TOTALS), {"sample_from": minute_at(plan.sample_from_m)}).one()
    counts = tuple(int(v or 0) for v in totals)
    return WriteCheck(len(sample), plan.sample_hours, counts, rows, time.perf_counter() - started)  # type: ignore[arg-type]
