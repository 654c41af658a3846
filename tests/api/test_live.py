"""Live events: SSE fed by LISTEN/NOTIFY over a real uvicorn, with Last-Event-ID resume and a connection cap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from tests.factories import create_incident, make_user, wait_for_workflow
from tests.peers import free_port


async def sse_events(response: httpx.Response) -> AsyncIterator[dict]:
    """Parse an SSE stream into {"id", "event", "data"} dicts (pings and comments skipped)."""
    current: dict = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in current:
                yield current
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            current[field] = value.lstrip(" ")


KINDS = ("workflow.status", "step.status")


async def collect_until(response: httpx.Response, done, timeout: float = 30) -> list[dict]:
    seen: list[dict] = []

    async def read() -> None:
        async for event in sse_events(response):
            seen.append({"id": int(event["id"]), **json.loads(event["data"])})
            if done(seen):
                return

    await asyncio.wait_for(read(), timeout)
    return seen


async def test_stream_delivers_workflow_and_step_events_live(server, api, temporal_client, worker, service):
    url, _ = service
    token = (await api.post("/api/me/tokens", json={"name": "sse"})).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
        async with client.stream("GET", "/api/events/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            # Served ahead of the middleware stack, with the headers every answer has.
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-security-policy"].startswith("default-src 'self'")
            assert response.headers["cache-control"] == "no-store"
            incident = await create_incident(api, service_url=url)

            def finished(seen: list[dict]) -> bool:
                return any(e["kind"] == "workflow.status" and e["data"]["status"] == "completed" for e in seen)

            seen = await collect_until(response, finished)
    mine = [e for e in seen if e["incident_id"] == incident["id"]]
    assert mine[0]["kind"] == "incident.created" and mine[0]["data"]["actor"] == "root"
    lifecycle = [e["data"]["status"] for e in mine if e["kind"] == "incident.status"]
    assert lifecycle == ["in_progress", "resolved"]  # the workflow moves the incident
    kinds = [(e["kind"], e.get("step_id"), e["data"]["status"]) for e in mine if e["kind"] in KINDS]
    assert kinds[0] == ("workflow.status", None, "in_progress")
    assert ("step.status", "monitor", "running") in kinds and ("step.status", "verify", "completed") in kinds
    assert kinds[-1] == ("workflow.status", None, "completed")
    assert [e["id"] for e in mine] == sorted(e["id"] for e in mine)
    await wait_for_workflow(temporal_client, incident["workflow_id"])


async def test_reconnect_with_last_event_id_gets_what_was_missed(server, api, temporal_client, worker, service):
    url, _ = service
    token = (await api.post("/api/me/tokens", json={"name": "sse"})).json()["token"]
    incident = await create_incident(api, service_url=url)
    await wait_for_workflow(temporal_client, incident["workflow_id"])
    await asyncio.sleep(0.5)  # the last projection write lands just after the workflow closes
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": "0"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
        async with client.stream("GET", "/api/events/stream", params={"incident_id": incident["id"]}) as response:
            seen = await collect_until(
                response,
                lambda s: any(e["kind"] == "workflow.status" and e["data"]["status"] == "completed" for e in s),
            )
    assert {e["incident_id"] for e in seen} == {incident["id"]}
    assert len([e for e in seen if e["kind"] == "step.status"]) >= 8  # running + completed for each step
    middle = seen[len(seen) // 2]["id"]
    headers["Last-Event-ID"] = str(middle)
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
        async with client.stream("GET", "/api/events/stream", params={"incident_id": incident["id"]}) as response:
            resumed = await collect_until(response, lambda s: s[-1]["id"] == seen[-1]["id"])
    assert [e["id"] for e in resumed] == [e["id"] for e in seen if e["id"] > middle]


async def test_a_page_stream_first_replays_from_since(server, api):
    """A page passes ?since= (a little before it was rendered): what happened since then comes first, so a
    change committed while the page loaded is not missed; an unusable `since` is a 422."""
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC) - timedelta(seconds=1)
    incident = await api.post("/api/incidents", json={"title": "replayed", "service": "s", "service_url": None})
    token = (await api.post("/api/me/tokens", json={"name": "sse"})).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
        params = {"incident_id": incident.json()["id"], "since": before.isoformat()}
        async with client.stream("GET", "/api/events/stream", params=params) as response:
            seen = await collect_until(response, lambda s: any(e["kind"] == "incident.created" for e in s), 10)
        assert seen[0]["kind"] == "incident.created" and seen[0]["data"]["title"] == "replayed"
        for bad in ("yesterday", "2026-11-25T10:00:00"):
            refused = await client.get("/api/events/stream", params={"since": bad})
            assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "query.since"


async def test_connections_are_capped_per_process(server, app, api):
    app.state.settings.sse_max_clients = 1
    token = (await api.post("/api/me/tokens", json={"name": "sse"})).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    refusals = ("agent_monitor_sse_clients_refused_total", {"reason": "process"})
    refused = REGISTRY.get_sample_value(*refusals) or 0
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
        async with client.stream("GET", "/api/events/stream") as first:
            assert first.status_code == 200
            second = await client.get("/api/events/stream")
            assert second.status_code == 503
            assert "too many live connections" in second.json()["detail"] and second.headers["retry-after"] == "5"
            assert "\nagent_monitor_sse_clients 1.0\n" in (await client.get("/metrics")).text
        assert REGISTRY.get_sample_value(*refusals) == refused + 1
        assert (await client.get("/api/events/stream", params={"incident_id": 0})).status_code == 422
        assert (await client.post("/api/events/stream")).status_code == 405  # only GET streams
    async with httpx.AsyncClient(base_url=server, timeout=30) as anonymous:
        assert (await anonymous.get("/api/events/stream")).status_code == 401


async def test_a_closed_connection_releases_its_place(server, app, api):
    token = (await api.post("/api/me/tokens", json={"name": "sse"})).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=30) as client:
        for _ in range(3):
            async with client.stream("GET", "/api/events/stream") as response:
                assert response.status_code == 200
                assert app.state.event_hub.clients == 1
        for _ in range(100):  # the server notices the disconnect on its own
            if app.state.event_hub.clients == 0:
                break
            await asyncio.sleep(0.05)
        assert app.state.event_hub.clients == 0
        bad = await client.get("/api/events/stream", params={"last_event_id": "x"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.last_event_id"


async def test_a_client_that_stops_reading_is_dropped_not_waited_for(engine, settings):
    from api.live import QUEUE_SIZE, EventHub, Frame

    hub = EventHub(engine, settings)
    subscribed = asyncio.Event()

    async def stuck_client() -> None:  # subscribes, then never reads (its socket is full)
        await hub.subscribe()
        subscribed.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(stuck_client())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        assert hub.clients == 1
        dropped = REGISTRY.get_sample_value("agent_monitor_sse_clients_dropped_total") or 0
        hub._fan_out([Frame(n, None, b"data: x\r\n\r\n") for n in range(1, QUEUE_SIZE + 2)])
        assert hub.clients == 0  # dropped at once; the browser reconnects with Last-Event-ID
        assert REGISTRY.get_sample_value("agent_monitor_sse_clients_dropped_total") == dropped + 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert task.cancelled()
    finally:
        task.cancel()
        await hub.close()


async def test_sigterm_ends_open_streams_and_the_web_process_exits(settings, engine):
    """A deploy stops the web process with SIGTERM while browsers hold streams: every stream ends cleanly (the
    browsers reconnect elsewhere) and the process exits at once instead of waiting on them."""
    _, token = make_user(engine, "viewer")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "DATA_DIR": str(settings.data_dir),
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    web = subprocess.Popen([str(Path(sys.executable).parent / "agent-monitor"), "web"], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            async with contextlib.AsyncExitStack() as streams:
                stream = "/api/events/stream"
                opened = [await streams.enter_async_context(client.stream("GET", stream)) for _ in range(3)]
                assert all(response.status_code == 200 for response in opened)
                web.send_signal(signal.SIGTERM)

                async def drain(response: httpx.Response) -> None:
                    async for _ in response.aiter_bytes():
                        pass

                await asyncio.wait_for(asyncio.gather(*(drain(response) for response in opened)), 10)
        # uvicorn re-raises the SIGTERM it caught once shut down: the exit status is -15, within seconds.
        assert await asyncio.to_thread(web.wait, 10) == -signal.SIGTERM
    finally:
        if web.poll() is None:
            web.kill()
            web.wait()


async def test_an_event_committed_after_a_newer_one_still_reaches_the_stream(server, api, engine):
    """Ids are taken at insert, rows seen at commit: event A (id n) whose transaction commits after event B's
    (id n+1) was never sent — the hub read `id > n+1` from then on (found by tests/scale with 2 web processes)."""
    from sqlmodel import Session

    from core.events import publish
    from core.tables import Event

    token = (await api.post("/api/me/tokens", json={"name": "late-commit"})).json()["token"]
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        async with client.stream("GET", "/api/events/stream") as response:
            reader = asyncio.create_task(collect_until(response, lambda s: len(s) >= 2, 30))
            await asyncio.sleep(0.5)  # the stream is subscribed
            with Session(engine) as slow, Session(engine) as quick:
                early = publish(slow, Event(kind="test.late", data={"n": "early"})).id  # id n, not committed
                late = publish(quick, Event(kind="test.late", data={"n": "late"})).id  # id n + 1
                assert early is not None and late == early + 1
                quick.commit()
                await asyncio.sleep(1)  # the hub has read and sent n + 1
                slow.commit()
            seen = await reader
    assert [(e["id"], e["data"]["n"]) for e in seen] == [(late, "late"), (early, "early")]


async def test_the_notifications_of_one_commit_cost_the_hub_one_read(engine, settings):
    """A workflow's projection writes several events in one commit and each NOTIFYs its id: the hub reads them all
    at the first notification and skips the rest (it read the table once per notification, and once more to find
    nothing: 21 reads for 20 events)."""
    from sqlalchemy import event
    from sqlmodel import Session

    from api.live import EventHub
    from core.events import publish
    from core.tables import Event

    hub = EventHub(engine, settings)
    reads: list[str] = []

    def count(_conn, _cursor, statement, *_):
        if statement.lstrip().upper().startswith("SELECT") and "FROM events" in statement:
            reads.append(statement)

    client = await hub.subscribe()
    event.listen(engine, "before_cursor_execute", count)
    try:
        with Session(engine) as session:
            ids = [publish(session, Event(kind="test.burst", data={"n": n})).id for n in range(20)]
            session.commit()
        got: list[int] = []
        while len(got) < 20:
            frames = await asyncio.wait_for(client.take(), 10)
            got += [frame.id for frame in frames if frame is not None and frame.id]
        assert got == ids  # every one, in order
        await asyncio.sleep(0.5)  # the rest of the notifications are handled
        assert len(reads) == 1, reads
    finally:
        event.remove(engine, "before_cursor_execute", count)
        hub.unsubscribe(client)
        await hub.close()
