"""Uptime's pure rules: the rollups' latency histogram (a fixed log scale, four buckets per doubling) and the
percentiles read from it, the ranges and steps a reader may ask for, which rollup serves a step, and availability.

Buckets are aligned UTC minutes, hours and days (no DST). Nothing here touches a database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Resolution = Literal["minute", "hour", "day"]

# Bucket 0: under 1 ms; bucket k ≥ 1: [2^((k-1)/4), 2^(k/4)) ms, so a percentile is known within ±9 %; the last
# bucket (from about 131 s, past any check's timeout) takes everything above.
HIST_PER_DOUBLING = 4
HIST_TOP = 69


def latency_bucket(ms: float) -> int:
    """The histogram bucket of one latency (the same formula the rollup SQL uses)."""
    if ms < 1:
        return 0
    return min(HIST_TOP, 1 + math.floor(HIST_PER_DOUBLING * math.log(ms) / math.log(2)))


def bucket_value(k: int) -> float:
    """The value a percentile falling in bucket k reads as: the bucket's geometric middle."""
    return 0.5 if k == 0 else 2 ** ((k - 0.5) / HIST_PER_DOUBLING)


@dataclass
class Histogram:
    """Counts by bucket index (sparse: a rollup stores only the span from its lowest to its highest bucket)."""

    counts: dict[int, int]

    @classmethod
    def of(cls, lower: int | None, values: Sequence[int] | None) -> Histogram:
        """From a stored array and its lower bound (Postgres keeps the bound; the driver hands only the values)."""
        if lower is None or not values:
            return cls({})
        return cls({lower + i: n for i, n in enumerate(values) if n})

    def add(self, other: Histogram) -> None:
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n

    def quantile(self, q: float, ceiling: float | None = None) -> float | None:
        """The q-th quantile (nearest rank), None with no latency; never above the largest latency seen."""
        total = sum(self.counts.values())
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for k in sorted(self.counts):
            seen += self.counts[k]
            if seen >= rank:
                value = bucket_value(k)
                return round(min(value, ceiling) if ceiling is not None else value, 1)
        return None  # unreachable: the ranks add up to total


def availability(*, checks: int, up: int, degraded: int, maintenance: int) -> float | None:
    """(up + degraded) / (checks − maintenance): degraded counts as available, maintenance is left out; None when
    no check counts (no data)."""
    counted = checks - maintenance
    return None if counted <= 0 else round((up + degraded) / counted, 6)


RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "1y": timedelta(days=365),
}
STEPS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
}
# step=auto: the finest step whose rollup keeps the whole range, within MAX_POINTS.
AUTO_STEP = {"1h": "1m", "24h": "1m", "7d": "1h", "30d": "1h", "90d": "6h", "1y": "1d"}
MAX_POINTS = 1500
RESOLUTION_OF_STEP: dict[str, Resolution] = {
    "1m": "minute", "5m": "minute", "15m": "minute", "1h": "hour", "6h": "hour", "1d": "day",
}  # fmt: skip
BUCKET: dict[Resolution, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PeriodError(ValueError):
    """A range, step or end a reader may not ask for; `field` names the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Period:
    """What one uptime answer covers: [start, end) in whole steps, and the rollup that serves it."""

    range: str
    step: str
    resolution: Resolution
    start: datetime
    end: datetime

    @property
    def step_delta(self) -> timedelta:
        return STEPS[self.step]

    def previous(self) -> Period:
        """The period just before this one, as long."""
        length = self.end - self.start
        return Period(self.range, self.step, self.resolution, self.start - length, self.start)


def align_up(at: datetime, step: timedelta) -> datetime:
    """The first step boundary (counted from the UTC epoch) at or after `at`."""
    seconds = (at - EPOCH).total_seconds()
    size = step.total_seconds()
    return EPOCH + timedelta(seconds=math.ceil(seconds / size) * size)


def align_down(at: datetime, step: timedelta) -> datetime:
    """The last step boundary (counted from the UTC epoch) at or before `at`."""
    seconds = (at - EPOCH).total_seconds()
    size = step.total_seconds()
    return EPOCH + timedelta(seconds=math.floor(seconds / size) * size)


# step=auto over many services: the rollup rows read (services × buckets) stay within this when a coarser rollup
# allows it (merging rows' histograms costs about 1.5 µs a row: 720,000 hour rows of 1,000 services took 2 s).
ROW_BUDGET = 100_000


def auto_step(range_: str, services: int) -> str:
    """The default step of a range: AUTO_STEP, made coarser (a coarser rollup) while `services` × its buckets would
    read more than ROW_BUDGET rows."""
    step = AUTO_STEP[range_]
    for coarser in ("1h", "1d"):
        rows = services * (RANGES[range_] / BUCKET[RESOLUTION_OF_STEP[step]])
        if rows > ROW_BUDGET and STEPS[coarser] > STEPS[step]:
            step = coarser
    return step


def period(
    *,
    range_: str,
    step: str,
    end: datetime | None,
    now: datetime,
    kept_days: dict[Resolution, int],
    services: int = 1,
) -> Period:
    """The period a reader asks for, refused (PeriodError naming the field) when its range or step is unknown, when
    the step makes more than MAX_POINTS points, or when the step is finer than the rollup kept that far back
    (`kept_days`: how many days each resolution is kept)."""
    if range_ not in RANGES:
        raise PeriodError("range", f"unknown range {range_[:20]!r}: one of {', '.join(RANGES)}")
    if step == "auto":
        step = auto_step(range_, services)
    elif step not in STEPS:
        raise PeriodError("step", f"unknown step {step[:20]!r}: auto or one of {', '.join(STEPS)}")
    if end is None:
        end = now
    if end.tzinfo is None:
        raise PeriodError("end", "end needs a time zone offset (e.g. 2026-12-06T21:00:00Z)")
    length, size = RANGES[range_], STEPS[step]
    if size > length:
        raise PeriodError("step", f"step {step} is longer than the range {range_}")
    if length / size > MAX_POINTS:
        raise PeriodError("step", f"step {step} is too small for range {range_}: more than {MAX_POINTS} points")
    aligned_end = align_up(end.astimezone(UTC), size)
    start = aligned_end - length
    resolution = RESOLUTION_OF_STEP[step]
    oldest = now - timedelta(days=kept_days[resolution])
    if start < oldest - BUCKET[resolution]:
        raise PeriodError(
            "step",
            f"step {step} is finer than the data kept for that time: {resolution} rollups are kept "
            f"{kept_days[resolution]} days; use a coarser step",
        )
    return Period(range_, step, resolution, start, aligned_end)


def merged(histograms: Iterable[Histogram]) -> Histogram:
    total = Histogram({})
    for h in histograms:
        total.add(h)
    return total
