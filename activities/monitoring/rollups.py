"""The uptime rollups' SQL on the monitor's write path: the results a flush stored, added to their minute, hour and
day rows (one statement: the three upserts as data-modifying CTEs over the same cells), a silenced check counted as
maintenance, and pruning by age.

Only results the flush actually inserted are added (a retried tick's repeats are not: store.write passes the keys
its INSERT … ON CONFLICT DO NOTHING returned), in the flush's transaction, so a rollup never counts a result twice
nor misses one that was stored. The aggregation is the one migration 0017 backfilled with: a result whose due time
falls in a maintenance window (one known when it is written) counts as maintenance, not up/degraded/down, and its
latency is left out.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text

from core.monitoring import ROLLUP_TABLES

UNITS = tuple(ROLLUP_TABLES.items())  # (unit, table), finest first

CELLS = """
SELECT m.service_id, date_trunc('minute', m.scheduled_at, 'UTC') AS bucket,
       CASE WHEN maint OR m.response_time_ms IS NULL THEN NULL WHEN m.response_time_ms < 1 THEN 0
            ELSE least(69, 1 + floor(4 * ln(m.response_time_ms) / ln(2))::int) END AS k,
       count(*) AS checks,
       count(*) FILTER (WHERE NOT maint AND m.status = 'up') AS up,
       count(*) FILTER (WHERE NOT maint AND m.status = 'degraded') AS degraded,
       count(*) FILTER (WHERE NOT maint AND m.status = 'down') AS down,
       count(*) FILTER (WHERE maint) AS maintenance,
       coalesce(sum(m.response_time_ms) FILTER (WHERE NOT maint), 0) AS latency_sum,
       count(m.response_time_ms) FILTER (WHERE NOT maint) AS latency_count,
       max(m.response_time_ms) FILTER (WHERE NOT maint) AS latency_max
FROM uptime_metrics m JOIN services s ON s.id = m.service_id
CROSS JOIN LATERAL (
  SELECT EXISTS (SELECT 1 FROM maintenance_windows w
                 WHERE w.starts_at <= m.scheduled_at AND m.scheduled_at < w.ends_at
                   AND (w.service IS NULL OR w.service = s.name)) AS maint
) mw
WHERE (m.service_id, m.scheduled_at) IN (
  SELECT * FROM unnest(CAST(:service_ids AS bigint[]), CAST(:scheduled_ats AS timestamptz[]))
)
GROUP BY 1, 2, 3
"""

UPSERT = """
INSERT INTO {table} AS r (service_id, bucket, checks, up, degraded, down, maintenance, latency_sum, latency_count,
                          latency_max, hist, updated_at)
SELECT service_id, b, sum(checks)::int, sum(up)::int, sum(degraded)::int, sum(down)::int, sum(maintenance)::int,
       sum(latency_sum), sum(latency_count)::int, max(latency_max),
       uptime_hist_build(array_agg(k) FILTER (WHERE k IS NOT NULL),
                         array_agg(latency_count) FILTER (WHERE k IS NOT NULL)), now()
FROM (SELECT service_id, date_trunc('{unit}', bucket, 'UTC') AS b, k, sum(checks) AS checks, sum(up) AS up,
             sum(degraded) AS degraded, sum(down) AS down, sum(maintenance) AS maintenance,
             sum(latency_sum) AS latency_sum, sum(latency_count)::bigint AS latency_count,
             max(latency_max) AS latency_max
      FROM cells GROUP BY 1, 2, 3) c
GROUP BY service_id, b
ON CONFLICT (service_id, bucket) DO UPDATE SET
  checks = r.checks + EXCLUDED.checks, up = r.up + EXCLUDED.up, degraded = r.degraded + EXCLUDED.degraded,
  down = r.down + EXCLUDED.down, maintenance = r.maintenance + EXCLUDED.maintenance,
  latency_sum = r.latency_sum + EXCLUDED.latency_sum, latency_count = r.latency_count + EXCLUDED.latency_count,
  latency_max = greatest(r.latency_max, EXCLUDED.latency_max), hist = uptime_hist_add(r.hist, EXCLUDED.hist),
  updated_at = EXCLUDED.updated_at
"""


def _statement() -> str:
    (_, last_table), *rest = reversed(UNITS)
    ctes = [f"cells AS MATERIALIZED ({CELLS})"]
    ctes += [f"add_{unit} AS ({UPSERT.format(table=table, unit=unit)})" for unit, table in reversed(rest)]
    return "WITH " + ",\n".join(ctes) + UPSERT.format(table=last_table, unit=UNITS[-1][0])


ADD_RESULTS = text(_statement())

SILENCED = """silenced_{unit} AS (
  INSERT INTO {table} AS r (service_id, bucket, checks, up, degraded, down, maintenance, latency_sum, latency_count,
                            updated_at)
  VALUES (:service_id, date_trunc('{unit}', CAST(:scheduled_at AS timestamptz), 'UTC'), 1, 0, 0, 0, 1, 0, 0, now())
  ON CONFLICT (service_id, bucket) DO UPDATE SET
    checks = r.checks + 1, maintenance = r.maintenance + 1, updated_at = EXCLUDED.updated_at
)"""
# Table and unit names come from ROLLUP_TABLES, never from input.
ADD_SILENCED = text("WITH " + ",\n".join(SILENCED.format(unit=u, table=t) for u, t in UNITS) + " SELECT 1")

PRUNE = """DELETE FROM {table} WHERE (service_id, bucket) IN (
  SELECT service_id, bucket FROM {table} WHERE bucket < :cutoff LIMIT :batch
)"""


def add_results(conn: Connection, stored: set[tuple[int, datetime]]) -> None:
    """Add the results just stored (by service id and due time) to their rollups."""
    if not stored:
        return
    keys = sorted(stored)
    conn.execute(ADD_RESULTS, {"service_ids": [sid for sid, _ in keys], "scheduled_ats": [at for _, at in keys]})


def add_silenced(conn: Connection, service_id: int, scheduled_at: datetime) -> None:
    """Count a check a maintenance window silenced (no result is stored for it) as maintenance."""
    conn.execute(ADD_SILENCED, {"service_id": service_id, "scheduled_at": scheduled_at})


def prune_batch(conn: Connection, resolution: str, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` rollups of the resolution older than `cutoff`; how many went."""
    table = ROLLUP_TABLES[resolution]
    return conn.execute(text(PRUNE.format(table=table)), {"cutoff": cutoff, "batch": batch}).rowcount
