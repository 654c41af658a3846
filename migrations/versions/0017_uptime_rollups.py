"""uptime rollups: per service per UTC minute / hour / day — checks by outcome, latency sum/count/max and a
log-scale latency histogram; backfilled here from the check results already stored (issue 21)

The monitor's ticks keep them from now on (activities/monitoring/rollups.py, the same aggregation as BACKFILL
below). Checks silenced by a maintenance window before this upgrade left no result, so they are not in the
backfill: those buckets have no data (left out of availability either way).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = {"minute": "uptime_rollups_minute", "hour": "uptime_rollups_hour", "day": "uptime_rollups_day"}

# Sum two sparse histograms (each array's lower bound is its lowest bucket), filling the gaps with zeros.
HIST_ADD = """
CREATE FUNCTION uptime_hist_add(a int[], b int[]) RETURNS int[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE lo int; hi int; r int[]; i int;
BEGIN
  IF a IS NULL OR cardinality(a) = 0 THEN RETURN b; END IF;
  IF b IS NULL OR cardinality(b) = 0 THEN RETURN a; END IF;
  lo := least(array_lower(a, 1), array_lower(b, 1));
  hi := greatest(array_upper(a, 1), array_upper(b, 1));
  r := array_fill(0, ARRAY[hi - lo + 1], ARRAY[lo]);
  FOR i IN lo..hi LOOP
    r[i] := coalesce(a[i], 0) + coalesce(b[i], 0);
  END LOOP;
  RETURN r;
END $$
"""
# A sparse histogram from bucket indexes and their counts.
HIST_BUILD = """
CREATE FUNCTION uptime_hist_build(ks int[], ns bigint[]) RETURNS int[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE lo int; hi int; r int[]; j int;
BEGIN
  IF ks IS NULL OR cardinality(ks) = 0 THEN RETURN NULL; END IF;
  SELECT min(k), max(k) INTO lo, hi FROM unnest(ks) AS k;
  r := array_fill(0, ARRAY[hi - lo + 1], ARRAY[lo]);
  FOR j IN 1..cardinality(ks) LOOP
    r[ks[j]] := r[ks[j]] + ns[j];
  END LOOP;
  RETURN r;
END $$
"""
HIST_SUM = "CREATE AGGREGATE uptime_hist_sum(int[]) (SFUNC = uptime_hist_add, STYPE = int[])"


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
      FROM {source} GROUP BY 1, 2, 3) c
GROUP BY service_id, b
ON CONFLICT (service_id, bucket) DO UPDATE SET
  checks = r.checks + EXCLUDED.checks, up = r.up + EXCLUDED.up, degraded = r.degraded + EXCLUDED.degraded,
  down = r.down + EXCLUDED.down, maintenance = r.maintenance + EXCLUDED.maintenance,
  latency_sum = r.latency_sum + EXCLUDED.latency_sum, latency_count = r.latency_count + EXCLUDED.latency_count,
  latency_max = greatest(r.latency_max, EXCLUDED.latency_max), hist = uptime_hist_add(r.hist, EXCLUDED.hist),
  updated_at = EXCLUDED.updated_at
"""


def _upsert(table: str, unit: str, source: str) -> str:
    return UPSERT.format(table=table, unit=unit, source=source)


# Frozen here (a later change to the monitor's SQL must not change what this revision did); the tests check that it
# gives the same rollups as the monitor's incremental writes.
BACKFILL = (
    """
CREATE TEMPORARY TABLE uptime_backfill_cells AS
WITH src AS (
  SELECT m.service_id, m.scheduled_at, m.status, m.response_time_ms,
         EXISTS (SELECT 1 FROM maintenance_windows w
                 WHERE w.starts_at <= m.scheduled_at AND m.scheduled_at < w.ends_at
                   AND (w.service IS NULL OR w.service = s.name)) AS maint
  FROM uptime_metrics m JOIN services s ON s.id = m.service_id
)
SELECT service_id, date_trunc('minute', scheduled_at, 'UTC') AS bucket,
       CASE WHEN maint OR response_time_ms IS NULL THEN NULL WHEN response_time_ms < 1 THEN 0
            ELSE least(69, 1 + floor(4 * ln(response_time_ms) / ln(2))::int) END AS k,
       count(*) AS checks,
       count(*) FILTER (WHERE NOT maint AND status = 'up') AS up,
       count(*) FILTER (WHERE NOT maint AND status = 'degraded') AS degraded,
       count(*) FILTER (WHERE NOT maint AND status = 'down') AS down,
       count(*) FILTER (WHERE maint) AS maintenance,
       coalesce(sum(response_time_ms) FILTER (WHERE NOT maint), 0) AS latency_sum,
       count(response_time_ms) FILTER (WHERE NOT maint) AS latency_count,
       max(response_time_ms) FILTER (WHERE NOT maint) AS latency_max
FROM src GROUP BY 1, 2, 3
""",
    *(_upsert(table, unit, "uptime_backfill_cells") for unit, table in TABLES.items()),
    "DROP TABLE uptime_backfill_cells",
)


def upgrade() -> None:
    op.execute(HIST_ADD)
    op.execute(HIST_BUILD)
    op.execute(HIST_SUM)
    for table in TABLES.values():
        op.create_table(
            table,
            sa.Column("service_id", sa.BigInteger(), nullable=False),
            sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
            sa.Column("checks", sa.Integer(), nullable=False),
            sa.Column("up", sa.Integer(), nullable=False),
            sa.Column("degraded", sa.Integer(), nullable=False),
            sa.Column("down", sa.Integer(), nullable=False),
            sa.Column("maintenance", sa.Integer(), nullable=False),
            sa.Column("latency_sum", sa.Float(), nullable=False),
            sa.Column("latency_count", sa.Integer(), nullable=False),
            sa.Column("latency_max", sa.Float(), nullable=True),
            sa.Column("hist", postgresql.ARRAY(sa.Integer()), nullable=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["service_id"], ["services.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("service_id", "bucket"),
        )
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    for table in reversed(TABLES.values()):
        op.drop_table(table)
    op.execute("DROP AGGREGATE uptime_hist_sum(int[])")
    op.execute("DROP FUNCTION uptime_hist_build(int[], bigint[])")
    op.execute("DROP FUNCTION uptime_hist_add(int[], int[])")
