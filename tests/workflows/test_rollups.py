"""Uptime rollups on real Postgres, kept by the monitor's write path: per service per UTC minute / hour / day they
say what the raw results say (up, degraded, down, maintenance, latency, gaps, bucket edges); a retried tick's
results are not counted twice; the migration's backfill gives the same rollups; silenced checks count as
maintenance; old rollups are pruned; and a real monitor checking a real local service keeps them right."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from temporalio.client import Client

from activities.monitoring import MonitorActivities
from activities.monitoring.store import MonitorStore
from core.monitoring import MaintenanceWindow
from core.settings import Settings
from core.tables import Event, utcnow
from services.incidents.open import open_incident
from tests.peers import http_service
from tests.workflows.rollup_rows import (
    add_service,
    expected_rollups,
    result,
    run_backfill,
    stored_rollups,
    write,
)
from tests.workflows.test_engine import wait_until
from tests.workflows.test_monitoring import monitor_settings, monitoring, register

T0 = datetime(2026, 12, 5, 23, 58, 0, tzinfo=UTC)  # two minutes before a day's (and an hour's) edge


def test_rollups_say_what_the_results_say_at_every_resolution(engine: Engine) -> None:
    checkout = add_service(engine, "checkout")
    search = add_service(engine, "search")
    with Session(engine) as session:
        # checkout is in maintenance for one minute; every service for another (a window for all).
        session.add(MaintenanceWindow(service="checkout", starts_at=T0 + timedelta(minutes=1),
                                      ends_at=T0 + timedelta(minutes=1, seconds=15)))  # fmt: skip
        session.add(MaintenanceWindow(service=None, starts_at=T0 + timedelta(minutes=3),
                                      ends_at=T0 + timedelta(minutes=3, seconds=30)))  # fmt: skip
        session.commit()
    batch = [
        result(checkout, T0, "up", 10.0),
        result(checkout, T0 + timedelta(seconds=20), "degraded", 900.0),
        result(checkout, T0 + timedelta(seconds=40), "down", None),  # no answer: no latency
        result(checkout, T0 + timedelta(seconds=59, microseconds=999_999), "up", 0.4),  # the minute's last instant
        result(checkout, T0 + timedelta(minutes=1), "down", 30.0),  # in checkout's window: maintenance
        result(checkout, T0 + timedelta(minutes=1, seconds=30), "up", 30.0),
        # a gap: nothing in 23:59:30 … 00:00:59 (the next day)
        result(checkout, T0 + timedelta(minutes=3), "up", 20.0),  # the window for all: maintenance
        result(checkout, T0 + timedelta(minutes=3, seconds=30), "up", 21.0),  # its end is not in it
        result(search, T0 + timedelta(minutes=1, seconds=10), "down", 5000.0),  # checkout's window is not search's
        result(search, T0 + timedelta(minutes=3, seconds=10), "down", 5000.0),
    ]
    assert len(write(engine, batch[:5])) == 5  # two flushes of one tick
    assert len(write(engine, batch[5:])) == 5

    for resolution in ("minute", "hour", "day"):
        assert stored_rollups(engine, resolution) == expected_rollups(engine, resolution), resolution

    minute = stored_rollups(engine, "minute")
    first = minute[(checkout.service_id, T0)]
    assert (first["checks"], first["up"], first["degraded"], first["down"], first["maintenance"]) == (4, 2, 1, 1, 0)
    assert first["latency_count"] == 3 and first["latency_max"] == 900.0 and first["hist"][0] == 1  # 0.4 ms
    window = minute[(checkout.service_id, T0 + timedelta(minutes=1))]
    assert (window["checks"], window["up"], window["down"], window["maintenance"]) == (2, 1, 0, 1)
    assert (checkout.service_id, T0 + timedelta(minutes=2)) not in minute  # a gap is no row, not zeros
    day = stored_rollups(engine, "day")
    assert day[(checkout.service_id, datetime(2026, 12, 5, tzinfo=UTC))]["checks"] == 6
    assert day[(checkout.service_id, datetime(2026, 12, 6, tzinfo=UTC))]["checks"] == 2  # after midnight UTC
    assert day[(search.service_id, datetime(2026, 12, 6, tzinfo=UTC))]["maintenance"] == 1

    # A retried tick writes the same results again: nothing is stored, nothing is counted twice.
    before = {r: stored_rollups(engine, r) for r in ("minute", "hour", "day")}
    assert write(engine, batch) == []
    assert {r: stored_rollups(engine, r) for r in ("minute", "hour", "day")} == before

    # The migration's backfill from the same raw results gives the same rollups.
    run_backfill(engine)
    assert {r: stored_rollups(engine, r) for r in ("minute", "hour", "day")} == before


def test_a_silenced_check_counts_as_maintenance_and_status_changes_are_published(engine: Engine) -> None:
    due = add_service(engine, "billing")
    write(engine, [result(due, T0, "up", 15.0)])
    MonitorStore(engine).skip(due, T0 + timedelta(seconds=30))
    row = stored_rollups(engine, "minute")[(due.service_id, T0)]
    assert (row["checks"], row["up"], row["maintenance"], row["latency_count"]) == (2, 1, 1, 1)
    assert stored_rollups(engine, "day")[(due.service_id, T0.replace(hour=0, minute=0))]["maintenance"] == 1

    write(engine, [result(due, T0 + timedelta(minutes=1), "degraded", 800.0)])
    write(engine, [result(due, T0 + timedelta(minutes=2), "degraded", 800.0)])  # no change: no event
    with Session(engine) as session:
        events = session.exec(select(Event).where(Event.kind == "service.status").order_by(col(Event.id))).all()
    assert [(e.data["name"], e.data["previous"], e.data["status"]) for e in events] == [
        ("billing", "unknown", "up"),
        ("billing", "up", "degraded"),
    ]


async def test_old_rollups_are_pruned_with_the_results(engine: Engine, settings: Settings) -> None:
    due = add_service(engine, "old")
    now = utcnow().replace(second=0, microsecond=0)
    write(engine, [result(due, now - timedelta(days=d), "up") for d in (800, 40, 1)])
    settings = settings.model_copy(update={"uptime_retention_days": 30, "uptime_rollup_retention_days": 730})
    async with httpx.AsyncClient() as http:
        await MonitorActivities(engine, http, settings, open_incident=open_incident).prune_uptime_metrics()
    ages = {
        r: sorted(round((now - bucket).total_seconds() / 86400) for _, bucket in stored_rollups(engine, r))
        for r in ("minute", "hour", "day")
    }
    assert ages["minute"] == [1]  # kept like the results (30 days)
    assert ages["hour"] == [1, 40]  # two years
    assert ages["day"] in ([1, 40], [2, 40], [1, 41], [2, 41])  # day buckets start at midnight


async def test_a_real_monitor_keeps_the_rollups_right(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """A monitor checks a real local service every second while it answers 200, then 500, then slowly; a second
    service is in maintenance. The rollups match the raw results, and the backfill gives the same."""
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        await register(api, "web", url, degraded_latency_ms=250, timeout_seconds=2, failure_threshold=10)
        await register(api, "quiet", url.replace("/health", "/quiet"))
        now = utcnow()
        window = await api.post(
            "/api/maintenance-windows",
            json={"service": "quiet", "starts_at": (now - timedelta(minutes=1)).isoformat(),
                  "ends_at": (now + timedelta(hours=1)).isoformat()},
        )  # fmt: skip
        assert window.status_code == 201, window.text

        def checks(name: str) -> int:
            rows = stored_rollups(engine, "day")
            with engine.connect() as conn:
                sid = conn.execute(text("SELECT id FROM services WHERE name = :n"), {"n": name}).scalar_one()
            return sum(v["checks"] for (s, _), v in rows.items() if s == sid)

        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: checks("web") >= 2, 30, "web's first checks")
            peer.status = 500
            await wait_until(lambda: stored_down(engine) >= 2, 30, "failed checks")
            peer.status, peer.delay = 200, 0.3
            await wait_until(lambda: stored_status(engine, "degraded") >= 2, 30, "slow checks")
            await wait_until(lambda: checks("quiet") >= 2, 30, "silenced checks")
            await asyncio.sleep(0)
    # Rollups count the silenced checks the raw results do not have: compare the stored results' services only.
    web_only = {r: _of(engine, stored_rollups(engine, r), "web") for r in ("minute", "hour", "day")}
    for resolution, rows in web_only.items():
        assert rows == _of(engine, expected_rollups(engine, resolution), "web"), resolution
    quiet = _of(engine, stored_rollups(engine, "day"), "quiet")
    assert sum(v["maintenance"] for v in quiet.values()) == sum(v["checks"] for v in quiet.values()) >= 2
    run_backfill(engine)
    assert {r: _of(engine, stored_rollups(engine, r), "web") for r in ("minute", "hour", "day")} == web_only
    with Session(engine) as session:
        kinds = [e.data["status"] for e in session.exec(select(Event).where(Event.kind == "service.status"))]
    assert "up" in kinds and "degraded" in kinds


def stored_down(engine: Engine) -> int:
    return stored_status(engine, "down")


def stored_status(engine: Engine, status: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT coalesce(sum({status}), 0) FROM uptime_rollups_day")).scalar_one()


def _of(engine: Engine, rows: dict, name: str) -> dict:
    with engine.connect() as conn:
        sid = conn.execute(text("SELECT id FROM services WHERE name = :n"), {"n": name}).scalar_one()
    return {k: v for k, v in rows.items() if k[0] == sid}
