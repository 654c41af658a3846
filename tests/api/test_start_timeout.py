"""A Temporal that accepts connections but never answers (its dev server suspended with SIGSTOP) does not hold the
request that opens an incident for ever: the workflow's start gives up after its RPC timeout, and the API answers
503 saying the incident was recorded and will start by itself when Temporal is back.

The test starts its own dev server, with the helper the session fixture uses, and suspends only that one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import psutil
import pytest
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from app.main import create_app
from core.tables import Incident
from services.incidents.start import START_WORKFLOW_TIMEOUT
from tests.conftest import app_client, start_dev_server
from tests.factories import make_user


@pytest.fixture
async def private_temporal() -> AsyncIterator[tuple[WorkflowEnvironment, psutil.Process]]:
    """A dev server of this test's own, and its process (to suspend it)."""
    env = await start_dev_server()
    port = env.client.service_client.config.target_host.rsplit(":", 1)[1]
    process = next(
        child
        for child in psutil.Process().children(recursive=True)
        if "start-dev" in child.cmdline() and port in child.cmdline()
    )
    try:
        yield env, process
    finally:
        if process.is_running():
            os.kill(process.pid, signal.SIGCONT)
        await env.shutdown()


async def test_a_suspended_temporal_gets_a_503_within_the_start_timeout(private_temporal, settings, engine):
    env, process = private_temporal
    app = create_app(settings, engine=engine, temporal=env.client)
    _, token = make_user(engine, "responder")
    os.kill(process.pid, signal.SIGSTOP)  # connected, then silent: as a paused or overloaded Temporal
    limit = START_WORKFLOW_TIMEOUT.total_seconds()
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as api:
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit + 30):  # ASGITransport itself never times out
                answer = await api.post(
                    "/api/incidents",
                    json={"title": "checkout down", "service": "checkout"},
                    headers={"Idempotency-Key": "suspended-temporal"},
                )
        except TimeoutError:
            pytest.fail(f"no answer within {limit + 30:g}s: the workflow start has no timeout")
        took = time.monotonic() - started
    assert answer.status_code == 503, answer.text
    assert limit - 1 < took < limit + 5, took
    with Session(engine) as session:
        (incident,) = session.exec(select(Incident)).all()  # recorded, so a retry with the key finds it
    assert answer.json()["detail"] == (
        f"incident {incident.id} is recorded but its workflow could not start yet (Temporal did not answer within "
        f"{limit:g}s); it will start by itself when Temporal is back (sending the request again records another "
        "incident, unless it carries the same Idempotency-Key)"
    )
