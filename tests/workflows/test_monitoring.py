"""Scheduled monitoring on the real dev server and Postgres: a ServiceMonitorWorkflow checks real local HTTP
services, records every result, opens an incident only after N failures in a row (and starts its playbook),
records the recovery, joins an incident already open, and keeps quiet during a maintenance window."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowExecutionStatus

from core.conversations import ConversationMessage
from core.monitoring import ServiceState, UptimeMetric
from core.payloads import MonitorStatus
from core.settings import Settings
from core.tables import Event, Incident, utcnow
from services.incidents.open import open_incident
from tests.factories import create_incident
from tests.peers import http_service
from tests.workflows.test_engine import wait_until
from worker.monitors import ensure_monitors
from worker.runner import incident_worker


def monitor_settings(settings: Settings, **overrides: Any) -> Settings:
    return settings.model_copy(
        update={"monitor_workflow_id": f"monitor-{uuid.uuid4().hex[:12]}", "monitor_window_seconds": 2.0, **overrides}
    )


@asynccontextmanager
async def monitoring(client: Client, engine: Engine, settings: Settings) -> AsyncIterator[list[str]]:
    """A worker with the monitors of this test's deployment running; they are stopped afterwards."""
    async with incident_worker(client, engine, settings, task_queue=settings.task_queue):
        ids = await ensure_monitors(client, settings)
        try:
            yield ids
        finally:
            for workflow_id in ids:
                await client.get_workflow_handle(workflow_id).terminate(reason="test over")


async def register(api: httpx.AsyncClient, name: str, url: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "check": {"type": "http", "url": url},
        "interval_seconds": 1,
        "timeout_seconds": 1,
        "failure_threshold": 3,
        **overrides,
    }
    response = await api.post("/api/services", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def results(engine: Engine, service: str) -> list[UptimeMetric]:
    with Session(engine) as session:
        from core.services import Service

        sid = session.exec(select(Service.id).where(Service.name == service)).one()
        return list(
            session.exec(
                select(UptimeMetric).where(UptimeMetric.service_id == sid).order_by(col(UptimeMetric.scheduled_at))
            )
        )


def incidents_of(engine: Engine, service: str) -> list[Incident]:
    with Session(engine) as session:
        return list(session.exec(select(Incident).where(Incident.service == service).order_by(col(Incident.id))))


def state_of(engine: Engine, service: str) -> ServiceState | None:
    with Session(engine) as session:
        from core.services import Service

        sid = session.exec(select(Service.id).where(Service.name == service)).one()
        return session.get(ServiceState, sid)


def recovery_and_messages(engine: Engine, incident_id: int | None) -> tuple[list[Event], list[str]]:
    """The incident's service_recovered events and the contents of its conversation."""
    with Session(engine) as session:
        recovered = session.exec(
            select(Event).where(Event.incident_id == incident_id, Event.kind == "incident.service_recovered")
        ).all()
        messages = session.exec(
            select(ConversationMessage.content).where(ConversationMessage.incident_id == incident_id)
        ).all()
    return list(recovered), list(messages)


async def test_outage_opens_one_incident_after_the_threshold_and_recovery_is_recorded(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        registered = await register(api, "checkout", url, failure_threshold=3, recovery_threshold=2)
        async with monitoring(temporal_client, engine, settings) as (monitor_id,):
            await wait_until(lambda: len(results(engine, "checkout")) >= 2, 20, "first checks")
            # One failed check (a blip) is recorded, and opens nothing.
            peer.script = [500]
            await wait_until(
                lambda: (
                    any(r.status == "down" for r in results(engine, "checkout"))
                    and results(engine, "checkout")[-1].status == "up"
                ),
                10,
                "a blip and a pass after it",
            )
            assert incidents_of(engine, "checkout") == []
            state = state_of(engine, "checkout")
            assert state is not None and state.status == "up" and state.consecutive_failures == 0

            peer.status = 503
            await wait_until(lambda: len(incidents_of(engine, "checkout")) == 1, 20, "the outage's incident")
            down_since = utcnow()
            (incident,) = incidents_of(engine, "checkout")
            assert incident.title == "checkout is down" and incident.service_url == url
            assert incident.idempotency_key == f"service:{registered['id']}:1"
            assert "failed 3 check(s) in a row" in incident.description and "503" in incident.description
            streak = [r.status for r in results(engine, "checkout")][-3:]
            assert streak == ["down", "down", "down"]
            # Linked to the state once its playbook started: the incident's IncidentWorkflow runs.
            await wait_until(lambda: state_of(engine, "checkout").incident_id == incident.id, 10, "state linked")
            assert incident.workflow_id is not None
            description = await temporal_client.get_workflow_handle(incident.workflow_id).describe()
            assert description.workflow_type == "IncidentWorkflow"

            # Further failures belong to the same incident; none opens another.
            await asyncio.sleep(2.5)
            assert len(incidents_of(engine, "checkout")) == 1
            downs = [r for r in results(engine, "checkout") if r.status == "down"][1:]
            assert len(downs) >= 4 and all(r.incident_id == incident.id for r in downs)

            peer.status = 200
            await wait_until(lambda: state_of(engine, "checkout").status == "up", 15, "recovery")
            state = state_of(engine, "checkout")
            assert state is not None and state.incident_id is None and state.consecutive_passes >= 2
            rows = results(engine, "checkout")
            ups_after = [r for r in rows if r.status == "up" and r.checked_at > down_since]
            assert ups_after and ups_after[0].incident_id == incident.id  # the check that ended the outage
            recovered, messages = recovery_and_messages(engine, incident.id)
            assert len(recovered) == 1 and recovered[0].data["service"] == "checkout"
            page = (await api.get(f"/incidents/{incident.id}")).text
            assert "Monitor: <strong>checkout</strong> recovered (2 check(s) in a row passed, up)" in page
            assert any("failed 3 check(s) in a row" in m for m in messages)
            assert any("checkout recovered at" in m and "2 check(s) in a row passed" in m for m in messages)

            # The status query counts a tick's results when the tick ends.
            handle = temporal_client.get_workflow_handle(monitor_id)
            for _ in range(50):
                status = await handle.query("status", result_type=MonitorStatus)
                if status.totals.recovered:
                    break
                await asyncio.sleep(0.2)
            assert status.totals.outages == 1 and status.totals.recovered == 1
            assert status.totals.checked >= len(rows) and status.last_tick is not None
            # Each check ran when it was due or after (how long after is bench.monitoring's figure).
            assert all(r.checked_at >= r.scheduled_at for r in results(engine, "checkout"))


async def test_an_open_incident_of_the_service_is_joined_not_duplicated(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        peer.status = 500
        await register(api, "payments", url, failure_threshold=2, incident_type="service_down")
        opened = await create_incident(api, title="payments errors reported", service="payments",
                                       incident_type="service_down")  # fmt: skip
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: state_of(engine, "payments") is not None
                             and state_of(engine, "payments").incident_id is not None, 20, "outage linked")  # fmt: skip
        assert [i.id for i in incidents_of(engine, "payments")] == [opened["id"]]
        assert state_of(engine, "payments").incident_id == opened["id"]
        # A retried attempt of the tick that joined it (its link lost) joins it again without a second notice.
        from activities.monitoring import MonitorActivities
        from core.services import Service

        with Session(engine) as session:
            service = session.exec(select(Service).where(Service.name == "payments")).one()
        async with httpx.AsyncClient() as http:
            monitor = MonitorActivities(engine, http, settings, open_incident=open_incident)
            with Session(engine) as session:
                again = monitor.join_open_incident(session, service.id, "payments", service.settings(), 1, "HTTP 500")
        assert again is not None and again.id == opened["id"]
        with Session(engine) as session:
            joined = session.exec(
                select(Event).where(Event.incident_id == opened["id"], Event.kind == "incident.service_down")
            ).all()
        assert len(joined) == 1
        page = (await api.get(f"/incidents/{opened['id']}")).text
        assert "Monitor: <strong>payments</strong> is down (outage 1); its failing checks joined this incident" in page


async def test_maintenance_window_silences_checks_and_incidents(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        peer.status = 500
        await register(api, "search", url, failure_threshold=1)
        await register(api, "billing", url.replace("/health", "/billing"), failure_threshold=1)
        now = utcnow()
        window = await api.post(
            "/api/maintenance-windows",
            json={"service": "search", "starts_at": (now - timedelta(minutes=1)).isoformat(),
                  "ends_at": (now + timedelta(hours=1)).isoformat(), "reason": "reindex"},
        )  # fmt: skip
        assert window.status_code == 201, window.text
        assert window.json()["active"] is True
        async with monitoring(temporal_client, engine, settings):
            # billing, not in maintenance, opens its incident; search stays silent meanwhile.
            await wait_until(lambda: len(incidents_of(engine, "billing")) == 1, 20, "billing's incident")
            await asyncio.sleep(1.5)
            assert results(engine, "search") == [] and incidents_of(engine, "search") == []
            ended = await api.delete(f"/api/maintenance-windows/{window.json()['id']}")
            assert ended.status_code == 200 and ended.json()["active"] is False
            await wait_until(lambda: len(incidents_of(engine, "search")) == 1, 20, "search's incident after")
        listed = await api.get("/api/maintenance-windows", params={"service": "search"})
        assert listed.status_code == 200 and listed.json() == []


async def test_maintenance_window_api_rejects_bad_windows(api: httpx.AsyncClient) -> None:
    now = utcnow()
    cases = [
        ({"starts_at": now.isoformat(), "ends_at": (now - timedelta(hours=1)).isoformat()}, "after starts_at"),
        ({"starts_at": "2026-12-01T10:00:00", "ends_at": "2026-12-01T11:00:00"}, "time zone"),
        ({"service": "ghost", "starts_at": now.isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat()},
         "no service named 'ghost'"),
        ({"starts_at": (now - timedelta(hours=2)).isoformat(), "ends_at": (now - timedelta(hours=1)).isoformat()},
         "over already"),
        ({"starts_at": now.isoformat(), "ends_at": (now + timedelta(days=40)).isoformat()}, "31 days"),
    ]  # fmt: skip
    for body, message in cases:
        response = await api.post("/api/maintenance-windows", json=body)
        assert response.status_code == 422 and message in response.text, (body, response.text)
    assert (await api.delete("/api/maintenance-windows/999")).status_code == 404


async def test_monitors_are_started_once_per_shard(temporal_client: Client, engine: Engine, settings: Settings) -> None:
    settings = monitor_settings(settings)
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        first = await ensure_monitors(temporal_client, settings)
        again = await ensure_monitors(temporal_client, settings)  # a second worker starting
        assert first == again == [settings.monitor_workflow_id]
        run = (await temporal_client.get_workflow_handle(first[0]).describe()).run_id
        assert (await temporal_client.get_workflow_handle(again[0]).describe()).run_id == run
        sharded = settings.model_copy(update={"monitor_shards": 2})
        ids = await ensure_monitors(temporal_client, sharded)
        assert ids == [f"{settings.monitor_workflow_id}-1of2", f"{settings.monitor_workflow_id}-2of2"]
        old = await temporal_client.get_workflow_handle(first[0]).describe()
        assert old.status == WorkflowExecutionStatus.TERMINATED
        for workflow_id in ids:
            handle = temporal_client.get_workflow_handle(workflow_id)
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            await handle.terminate(reason="test over")


async def test_results_older_than_the_retention_are_pruned(
    engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    from activities.monitoring import MonitorActivities
    from core.services import Service

    await register(api, "old", "http://127.0.0.1:9/health")
    now = utcnow()
    with Session(engine) as session:
        sid = session.exec(select(Service.id).where(Service.name == "old")).one()
        for days in (45, 31, 29, 0):
            at = now - timedelta(days=days)
            session.add(UptimeMetric(service_id=sid, scheduled_at=at, checked_at=at, status="up"))
        session.commit()
    async with httpx.AsyncClient() as http:
        deleted = await MonitorActivities(engine, http, settings, open_incident=open_incident).prune_uptime_metrics()
    assert deleted == 2
    kept = sorted(round((now - r.checked_at).total_seconds() / 86400) for r in results(engine, "old"))
    assert kept == [0, 29]


async def test_a_hanging_service_does_not_hold_up_the_others(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with socket.socket() as silent, http_service() as (url, _):
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepts connections (the kernel does) and never answers
        await register(api, "stuck", f"http://127.0.0.1:{silent.getsockname()[1]}/health", timeout_seconds=3,
                       failure_threshold=100)  # fmt: skip
        await register(api, "fine", url)
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: len(results(engine, "stuck")) >= 3, 30, "three hung checks")
    stuck = results(engine, "stuck")
    assert all(r.status == "down" and r.error_kind == "timeout" for r in stuck)
    fine = [r.checked_at for r in results(engine, "fine")]
    # Checked every second the whole time, windows' ends included: no gap waits for the hung check to time out.
    gaps = [(b - a).total_seconds() for a, b in zip(fine, fine[1:], strict=False)]
    assert len(fine) >= 8 and max(gaps) < 2.0, gaps


async def test_a_check_running_over_a_windows_end_keeps_the_services_schedule(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """A service answering in 0.8 s, checked every second: some of its checks are still running when the tick's
    2 s window ends. Each next check still starts when it is due, not at the next window's start."""
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        peer.delay = 0.8
        await register(api, "slowish", url, timeout_seconds=3, degraded_latency_ms=5000)
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: len(results(engine, "slowish")) >= 10, 40, "ten checks")
    checks = results(engine, "slowish")[:10]
    assert all(r.status == "up" for r in checks), [r.status for r in checks]
    due = [r.scheduled_at for r in checks]
    slots = [round((b - a).total_seconds(), 2) for a, b in zip(due, due[1:], strict=False)]
    lags = [round((r.checked_at - r.scheduled_at).total_seconds(), 2) for r in checks]
    # Five windows' ends went by. A check missed for the window's sake starts more than a second late (at the next
    # window's start, 1-1.8 s after its due time); each started well within its second.
    assert max(lags) < 0.9, (slots, lags)


async def test_checks_stay_on_time_while_the_workers_threads_are_busy(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """An incident storm queues hundreds of agents' database calls on the worker's shared threads; the monitor's own
    (loading each window, storing results) do not wait behind them, so the checks still start when they are due."""
    settings = monitor_settings(settings)
    loop = asyncio.get_running_loop()
    with http_service() as (url, _):
        await register(api, "steady", url)
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: len(results(engine, "steady")) >= 2, 30, "the first checks")
            busy_from = utcnow()
            # The shared pool's threads (asyncio.to_thread's) each held for 1.5 s, a queue 8 s long.
            held = [loop.run_in_executor(None, time.sleep, 1.5) for _ in range(5 * 6)]
            await asyncio.gather(*held)
            busy_until = utcnow()
            await wait_until(lambda: results(engine, "steady")[-1].scheduled_at > busy_until, 30, "checks after")
    during = [r for r in results(engine, "steady") if busy_from <= r.scheduled_at <= busy_until]
    lags = [round((r.checked_at - r.scheduled_at).total_seconds(), 2) for r in during]
    span = (busy_until - busy_from).total_seconds()
    assert len(during) >= 6 and max(lags) < 0.9, (span, lags, [r.scheduled_at.isoformat() for r in during])


async def test_a_stopping_worker_ends_its_monitor_tick_at_once_and_the_next_worker_checks_on(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """A worker stopping (Ctrl-C, a restart to load an agent) while its monitor's tick has most of a long window to
    go: the tick ends at once with what it checked stored, instead of holding the stop for the window; the next
    tick, on the next worker, checks on."""
    settings = monitor_settings(settings, monitor_window_seconds=120.0)
    drain = {"graceful_shutdown_timeout": timedelta(seconds=120)}  # as `agent-monitor worker` drains its activities
    with http_service() as (url, _):
        await register(api, "steady", url)
        worker = incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue, **drain)
        await worker.__aenter__()
        stopped = False
        try:
            [monitor] = await ensure_monitors(temporal_client, settings)
            await wait_until(lambda: len(results(engine, "steady")) >= 2, 30, "two checks of the first tick")
            stopped = True
            try:
                await asyncio.wait_for(worker.__aexit__(None, None, None), 45)
            except TimeoutError:
                raise AssertionError("the worker did not stop within 45 s: it waits for the monitor's window") from None
            checked = len(results(engine, "steady"))
            history = await temporal_client.get_workflow_handle(monitor).fetch_history()
            ended = [e for e in history.events if e.HasField("activity_task_completed_event_attributes")]
            assert ended, "the tick did not end by itself (cancelled or timed out instead)"
            async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
                await wait_until(lambda: len(results(engine, "steady")) >= checked + 2, 30, "checks by the next worker")
            await temporal_client.get_workflow_handle(monitor).terminate(reason="test over")
        finally:
            if not stopped:
                await worker.__aexit__(None, None, None)


async def test_an_outage_whose_incident_did_not_open_is_opened_by_the_next_tick(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """A tick that saw the outage but died (or found Temporal away) before the incident opened."""
    from core.services import Service

    settings = monitor_settings(settings)
    await register(api, "ledger", "http://127.0.0.1:9/health", failure_threshold=2)
    since = utcnow() - timedelta(minutes=3)
    with Session(engine) as session:
        sid = session.exec(select(Service.id).where(Service.name == "ledger")).one()
        session.add(
            ServiceState(service_id=sid, status="down", consecutive_failures=2, episode=4, failing_since=since,
                         next_check_at=utcnow() + timedelta(hours=1), last_error="connection refused")
        )  # fmt: skip
        at = since + timedelta(seconds=30)
        session.add(UptimeMetric(service_id=sid, scheduled_at=at, checked_at=at, status="down"))
        session.commit()
    async with monitoring(temporal_client, engine, settings):
        await wait_until(lambda: state_of(engine, "ledger").incident_id is not None, 20, "the incident")
    (incident,) = incidents_of(engine, "ledger")
    assert incident.idempotency_key == f"service:{sid}:4" and "connection refused" in incident.description
    assert state_of(engine, "ledger").incident_id == incident.id
    assert [r.incident_id for r in results(engine, "ledger")] == [incident.id]  # the outage's earlier check


async def test_a_service_registered_again_opens_a_new_incident_not_its_predecessors(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        peer.status = 500
        first = await register(api, "search", url, failure_threshold=1)
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: len(incidents_of(engine, "search")) == 1, 20, "the first incident")
            (old,) = incidents_of(engine, "search")
            closed = await api.post(f"/api/incidents/{old.id}/status", json={"status": "resolved"})
            assert closed.status_code == 200, closed.text
            assert (await api.delete("/api/services/search")).status_code == 204
            again = await register(api, "search", url, failure_threshold=1)
            await wait_until(lambda: len(incidents_of(engine, "search")) == 2, 20, "the new incident")
    new = incidents_of(engine, "search")[1]
    assert (old.idempotency_key, new.idempotency_key) == (f"service:{first['id']}:1", f"service:{again['id']}:1")


def linked(engine: Engine, service: str) -> bool:
    """The service is down and its outage linked to an incident."""
    state = state_of(engine, service)
    return state is not None and state.status == "down" and state.incident_id is not None


def up(engine: Engine, service: str) -> bool:
    state = state_of(engine, service)
    return state is not None and state.status == "up"


async def test_an_incident_resolved_while_its_service_stays_down_is_reopened(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """Issue 19, finding 1: an incident resolved while the service was still down left a silent outage (65 failures
    in a row, incident `resolved`, and the monitor never opened another). No outage is without an open incident."""
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        peer.status = 503
        await register(api, "orders", url, failure_threshold=2)
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: linked(engine, "orders"), 20, "the outage's incident")
            (incident,) = incidents_of(engine, "orders")
            resolved = await api.post(f"/api/incidents/{incident.id}/status", json={"status": "resolved"})
            assert resolved.status_code == 200, resolved.text
            await wait_until(
                lambda: incidents_of(engine, "orders")[0].status not in ("resolved", "closed"), 30, "reopened"
            )
            assert [i.id for i in incidents_of(engine, "orders")] == [incident.id]
            timeline = (await api.get(f"/api/incidents/{incident.id}/timeline")).json()["items"]
            reopened = [
                e["data"] for e in timeline if e["kind"] == "incident.status" and e["data"]["status"] == "reopened"
            ]
            assert len(reopened) == 1 and reopened[0]["actor"] == "monitor"
            assert reopened[0]["comment"].startswith("monitor: orders is still down (outage 1)")


async def test_a_flap_reopens_the_incident_instead_of_opening_another(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """Issue 19, finding 2: a service failing and recovering every few seconds opened an incident per flap."""
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        await register(api, "cart", url, failure_threshold=2, recovery_threshold=2)
        async with monitoring(temporal_client, engine, settings):
            for flap in range(3):
                peer.status = 503
                await wait_until(lambda: linked(engine, "cart"), 30, f"outage {flap + 1}")
                (incident,) = incidents_of(engine, "cart")
                if incident.status not in ("resolved", "closed"):
                    moved = await api.post(f"/api/incidents/{incident.id}/status", json={"status": "resolved"})
                    assert moved.status_code == 200, moved.text
                peer.status = 200
                await wait_until(lambda: up(engine, "cart"), 30, f"recovery {flap + 1}")
            assert len(incidents_of(engine, "cart")) == 1
            timeline = (await api.get(f"/api/incidents/{incident.id}/timeline")).json()["items"]
            reopens = [e["data"]["comment"] for e in timeline if e["kind"] == "incident.status"
                       and e["data"]["status"] == "reopened"]  # fmt: skip
            assert len(reopens) == 2 and all("failed again" in c and "after this incident was resolved" in c
                                             for c in reopens)  # fmt: skip


async def test_with_reopening_off_each_outage_opens_its_own_incident(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        await register(api, "mail", url, failure_threshold=1, recovery_threshold=1, reopen_within_seconds=0)
        async with monitoring(temporal_client, engine, settings):
            for outage in (1, 2):
                peer.status = 503
                await wait_until(lambda n=outage: len(incidents_of(engine, "mail")) == n, 30, f"incident {outage}")
                latest = incidents_of(engine, "mail")[-1]
                assert (
                    await api.post(f"/api/incidents/{latest.id}/status", json={"status": "resolved"})
                ).status_code == 200
                peer.status = 200
                await wait_until(lambda: up(engine, "mail"), 30, f"recovery {outage}")
        assert len(incidents_of(engine, "mail")) == 2


async def test_a_slow_answer_is_degraded_not_invisible(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """Issue 19, finding 6: 3 s answers were invisible under the default timeout (and down under a short one)."""
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        await register(api, "search", url, timeout_seconds=5, degraded_latency_ms=300)
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: up(engine, "search"), 20, "up while fast")
            peer.delay = 0.6
            await wait_until(lambda: (state_of(engine, "search") or ServiceState()).status == "degraded", 20,
                             "degraded while slow")  # fmt: skip
            slow = [r for r in results(engine, "search") if r.status == "degraded"]
            assert slow[0].error.startswith("slow: answered in ") and "(degraded above 300 ms)" in slow[0].error
            assert slow[0].error_kind == "slow" and slow[0].response_time_ms > 300
            assert incidents_of(engine, "search") == []  # slow is not down: no outage
            peer.delay = 0
            await wait_until(lambda: up(engine, "search"), 20, "up again")


async def test_an_outage_caused_by_a_dependency_is_linked_to_the_dependencys_incident(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """Issue 19, finding 9: the incidents of a service and of the dependency that caused it were not linked."""
    settings = monitor_settings(settings)
    with http_service() as (db_url, db), http_service() as (web_url, web):
        await register(api, "ledger-db", db_url, failure_threshold=2)
        await register(api, "ledger-web", web_url, failure_threshold=2, dependencies=["ledger-db"])
        async with monitoring(temporal_client, engine, settings):
            db.status = 503
            await wait_until(lambda: linked(engine, "ledger-db"), 30, "the dependency's incident")
            web.status = 503  # the victim fails after its dependency
            await wait_until(lambda: linked(engine, "ledger-web"), 30, "the victim's incident")
        (cause,) = incidents_of(engine, "ledger-db")
        (victim,) = incidents_of(engine, "ledger-web")
        detail = (await api.get(f"/api/incidents/{victim.id}")).json()
        assert [(link["kind"], link["incident_id"]) for link in detail["links"]] == [("caused_by", cause.id)]
        shown = (await api.get(f"/api/incidents/{cause.id}")).json()["links"]
        assert [(link["kind"], link["incident_id"]) for link in shown] == [("causes", victim.id)]
