"""What the rollup tests share: services and results written through the monitor's real write path
(MonitorStore.write), the rollups as stored, the same rollups computed independently in Python from the raw
results, and migration 0017's backfill run on its own."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlmodel import Session

from activities.http_check import CheckOutcome
from activities.monitoring.rows import Due, Result
from activities.monitoring.store import MonitorStore
from core.monitoring import ROLLUP_TABLES, ServiceState, Tracked
from core.services import Service, ServiceBase
from core.uptime import latency_bucket

ROOT = Path(__file__).resolve().parents[2]


def add_service(engine: Engine, name: str, *, at: datetime | None = None) -> Due:
    config = ServiceBase.model_validate({"check": {"type": "http", "url": f"http://10.0.0.7/{name}"}})
    with Session(engine) as session:
        row = Service(name=name, config=config.model_dump(mode="json"))
        session.add(row)
        session.flush()
        assert row.id is not None
        session.add(ServiceState(service_id=row.id, next_check_at=at or datetime.now(UTC)))
        session.commit()
        return Due(row.id, name, config, Tracked(), at or datetime.now(UTC))


def result(due: Due, at: datetime, status: str, latency: float | None = 12.0) -> Result:
    outcome = CheckOutcome(url="http://x", healthy=status != "down", latency_ms=latency, status=status)
    before = due.state
    after = Tracked(status=status if status != "down" else before.status)
    due.state = after
    return Result(due, at, at, status, outcome, None, before, after, None, at + timedelta(seconds=60))


def write(engine: Engine, batch: list[Result]) -> list[Result]:
    return MonitorStore(engine).write(batch)


def stored_rollups(engine: Engine, resolution: str) -> dict[tuple[int, datetime], dict[str, Any]]:
    table = ROLLUP_TABLES[resolution]
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT service_id, bucket, checks, up, degraded, down, maintenance, latency_sum, latency_count, "
                f"latency_max, array_lower(hist, 1), hist FROM {table}"
            )
        ).all()
    out = {}
    for sid, bucket, checks, up, degraded, down, maint, lsum, lcount, lmax, lower, hist in rows:
        counts = {lower + i: n for i, n in enumerate(hist) if n} if hist else {}
        out[(sid, bucket)] = {
            "checks": checks, "up": up, "degraded": degraded, "down": down, "maintenance": maint,
            "latency_sum": round(lsum, 6), "latency_count": lcount, "latency_max": lmax, "hist": counts,
        }  # fmt: skip
    return out


TRUNC = {
    "minute": lambda t: t.replace(second=0, microsecond=0),
    "hour": lambda t: t.replace(minute=0, second=0, microsecond=0),
    "day": lambda t: t.replace(hour=0, minute=0, second=0, microsecond=0),
}


def expected_rollups(engine: Engine, resolution: str) -> dict[tuple[int, datetime], dict[str, Any]]:
    """The rollups as the raw results and maintenance windows say, computed here without SQL's help."""
    with engine.connect() as conn:
        results = conn.execute(
            text(
                "SELECT m.service_id, s.name, m.scheduled_at, m.status, m.response_time_ms FROM uptime_metrics m "
                "JOIN services s ON s.id = m.service_id"
            )
        ).all()
        windows = conn.execute(text("SELECT service, starts_at, ends_at FROM maintenance_windows")).all()
    out: dict[tuple[int, datetime], dict[str, Any]] = defaultdict(
        lambda: {"checks": 0, "up": 0, "degraded": 0, "down": 0, "maintenance": 0, "latency_sum": 0.0,
                 "latency_count": 0, "latency_max": None, "hist": {}}
    )  # fmt: skip
    for sid, name, at, status, ms in results:
        row = out[(sid, TRUNC[resolution](at.astimezone(UTC)))]
        row["checks"] += 1
        if any((w is None or w == name) and start <= at < end for w, start, end in windows):
            row["maintenance"] += 1
            continue
        row[status] += 1
        if ms is not None:
            row["latency_sum"] += ms
            row["latency_count"] += 1
            row["latency_max"] = ms if row["latency_max"] is None else max(row["latency_max"], ms)
            k = latency_bucket(ms)
            row["hist"][k] = row["hist"].get(k, 0) + 1
    for row in out.values():
        row["latency_sum"] = round(row["latency_sum"], 6)
    return dict(out)


def run_backfill(engine: Engine) -> None:
    """Empty the rollups and fill them again with migration 0017's backfill."""
    path = ROOT / "migrations" / "versions" / "0017_uptime_rollups.py"
    spec = importlib.util.spec_from_file_location("rollup_migration", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with engine.begin() as conn:
        for table in ROLLUP_TABLES.values():
            conn.execute(text(f"DELETE FROM {table}"))
        for statement in module.BACKFILL:
            conn.execute(text(statement))
