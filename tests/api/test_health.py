"""/healthz and /readyz against real, and really stopped, dependencies."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
from temporalio.client import Client

from app.main import create_app
from core.db import EmbeddedPostgres, make_engine
from tests.peers import free_port


async def _get(app, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        return await client.get(path)


async def test_healthz_and_readyz_ok(api):
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["failing"] == []


async def test_readyz_names_a_stopped_postgres(settings, temporal_client):
    with tempfile.TemporaryDirectory(prefix="am-stopped-pg-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp))
        engine = make_engine(postgres.start(stop_at_exit=True))
        app = create_app(settings, engine=engine, temporal=temporal_client)
        assert (await _get(app, "/readyz")).status_code == 200
        postgres.stop()
        response = await _get(app, "/readyz")
        engine.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["postgres"]
    assert body["checks"]["temporal"] == {"ok": True}
    assert body["checks"]["postgres"]["ok"] is False and body["checks"]["postgres"]["error"]


async def test_the_live_stream_answers_503_while_postgres_is_stopped(settings, temporal_client):
    """The stream is served ahead of the app's error handlers: with the database down it still answers as they do
    (503 saying so), not with a 500."""
    with tempfile.TemporaryDirectory(prefix="am-stopped-pg-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp))
        engine = make_engine(postgres.start(stop_at_exit=True))
        app = create_app(settings, engine=engine, temporal=temporal_client)
        postgres.stop()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/api/events/stream", headers={"Authorization": "Bearer am_not-checked-yet"})
        engine.dispose()
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == "the database is unavailable right now; try again in a few seconds"


async def test_readyz_names_an_unreachable_temporal(settings, engine):
    unreachable = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    app = create_app(settings, engine=engine, temporal=unreachable)
    response = await _get(app, "/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["temporal"]
    assert (await _get(app, "/healthz")).status_code == 200
