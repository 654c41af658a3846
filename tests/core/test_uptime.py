"""core/uptime.py's pure rules: the latency histogram's buckets and percentiles, step=auto over many services,
and services/uptime.py's tiling of a period by the coarsest rollups."""

from __future__ import annotations

from datetime import UTC, datetime

from core.uptime import Histogram, auto_step, latency_bucket
from services.uptime import tiles


def test_percentiles_are_within_a_bucket_of_the_truth() -> None:
    values = [float(v) for v in range(1, 1001)]
    hist = Histogram({})
    for v in values:
        hist.add(Histogram({latency_bucket(v): 1}))
    for q, truth in ((0.5, 500.0), (0.95, 950.0)):
        assert abs(hist.quantile(q) - truth) / truth < 0.1
    assert hist.quantile(0.99, ceiling=900.0) == 900.0  # never above the largest latency seen
    assert Histogram({}).quantile(0.5) is None and latency_bucket(0.2) == 0


def test_auto_step_reads_a_coarser_rollup_for_many_services() -> None:
    assert [auto_step(r, 1) for r in ("1h", "24h", "7d", "30d", "90d", "1y")] == ["1m", "1m", "1h", "1h", "6h", "1d"]
    assert auto_step("24h", 1000) == "1h" and auto_step("30d", 1000) == "1d" and auto_step("1h", 1000) == "1m"


def test_a_period_is_tiled_by_days_hours_and_minutes() -> None:
    start, end = datetime(2026, 12, 1, 22, 13, tzinfo=UTC), datetime(2026, 12, 4, 1, 7, tzinfo=UTC)
    parts = tiles(start, end, "minute")
    assert [(r, a.isoformat()[:16], b.isoformat()[:16]) for r, a, b in parts] == [
        ("day", "2026-12-02T00:00", "2026-12-04T00:00"),
        ("hour", "2026-12-01T23:00", "2026-12-02T00:00"),
        ("minute", "2026-12-01T22:13", "2026-12-01T23:00"),
        ("hour", "2026-12-04T00:00", "2026-12-04T01:00"),
        ("minute", "2026-12-04T01:00", "2026-12-04T01:07"),
    ]
    assert tiles(start.replace(minute=0), end.replace(minute=0), "hour")[0][0] == "day"
