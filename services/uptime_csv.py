"""Uptime as CSV, streamed: a comment line with the period and time zone, a header row, then one row per service
and point, read from the rollups through a server-side cursor a few hundred rows at a time (memory stays flat
however many services and points the export has)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import UTC

from sqlalchemy import Engine, text

from core.monitoring import ROLLUP_TABLES
from core.uptime import Period
from services.uptime import EPOCH_SQL, Totals

HEADER = (
    "bucket_start", "service", "checks", "up", "degraded", "down", "maintenance", "availability", "p50_ms", "p95_ms",
    "max_ms",
)  # fmt: skip
FETCH_ROWS = 500

ROWS = """
SELECT s.name, p.t, p.checks, p.up, p.degraded, p.down, p.maintenance, p.latency_count, p.latency_max,
       array_lower(p.h, 1), p.h
FROM (
  SELECT service_id, date_bin(CAST(:step AS interval), bucket, {epoch}) AS t, sum(checks)::int AS checks,
         sum(up)::int AS up, sum(degraded)::int AS degraded, sum(down)::int AS down,
         sum(maintenance)::int AS maintenance, sum(latency_count)::int AS latency_count,
         max(latency_max) AS latency_max, uptime_hist_sum(hist) AS h
  FROM {table}
  WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start AND bucket < :end
  GROUP BY 1, 2
) p JOIN services s ON s.id = p.service_id
ORDER BY s.name, p.t
"""


def _line(values: Sequence[object]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def csv_lines(*, engine: Engine, service_ids: Sequence[int], span: Period, label: str) -> Iterator[str]:
    """The export's lines; `label` names what it covers in the comment line (service=checkout, group=shop, …)."""
    yield (
        f"# {label} range={span.range} step={span.step} start={span.start.isoformat()} "
        f"end={span.end.isoformat()} timezone=UTC\n"
    )
    yield _line(HEADER)
    if not service_ids:
        return
    query = text(ROWS.format(table=ROLLUP_TABLES[span.resolution], epoch=EPOCH_SQL))
    params = {"step": span.step_delta, "ids": list(service_ids), "start": span.start, "end": span.end}
    with engine.connect() as conn:
        # A server-side cursor: rows arrive FETCH_ROWS at a time, each chunk written out before the next is read.
        result = conn.execute(query.execution_options(stream_results=True, yield_per=FETCH_ROWS), params)
        for chunk in result.partitions(FETCH_ROWS):
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            for row in chunk:
                p = Totals.of_row(row[2:11]).public()
                writer.writerow((
                    row[1].astimezone(UTC).isoformat(), row[0], p["checks"], p["up"], p["degraded"], p["down"],
                    p["maintenance"], _number(p["availability"]), _number(p["p50_ms"]), _number(p["p95_ms"]),
                    _number(p["max_ms"]),
                ))  # fmt: skip
            yield out.getvalue()
