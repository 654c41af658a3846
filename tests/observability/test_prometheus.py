"""A real Prometheus (Debian's `prometheus`; `make install-test` installs it) scrapes `agent-monitor web`'s /metrics,
`agent-monitor worker`'s and the Temporal SDK's endpoint of that worker, each a process as in production, with
METRICS_TOKEN set; the test reads the figures back through Prometheus' query API: an incident created through the
API moves the web's incident gauge, its agents' attempts the worker's step histogram."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from core.settings import DEFAULT_DB_POOL_SIZE
from tests.factories import incident_payload, make_user
from tests.peers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROMETHEUS = Path("/usr/bin/prometheus")
CLI = [sys.executable, "-m", "cli.main"]
TOKEN = "scrape-token-for-the-test"  # noqa: S105
WAIT = 120.0  # generous: a busy two-core machine starts three processes and scrapes every second


def _wait_http(url: str, proc: subprocess.Popen, log: Path, what: str, **kwargs) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        assert proc.poll() is None, f"{what} exited:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(url, timeout=2, **kwargs).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what} did not answer {url}:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator:
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def stack(settings, database_url, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`agent-monitor web` and `agent-monitor worker` on this test's database, task queue and Temporal, and a
    Prometheus scraping the three endpoints every second; yields their URLs."""
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: `make install-test` installs Debian's prometheus"
    web_port, worker_port, sdk_port, prom_port = free_port(), free_port(), free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "METRICS_"))}
    env.update(
        PYTHONPATH=str(Path.cwd()),
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=settings.temporal_address,
        TASK_QUEUE=settings.task_queue,
        DATA_DIR=str(tmp_path / "data"),
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(web_port),
        METRICS_TOKEN=TOKEN,
        WORKER_METRICS_PORT=str(worker_port),
        TEMPORAL_METRICS_PORT=str(sdk_port),
        MONITORING_ENABLED="false",
        EMBEDDING_PROVIDER="off",
        OUTBOUND_ALLOW_LOOPBACK="true",
        CHECK_TIMEOUT_SECONDS="2",
        VERIFY_CHECKS="1",
        VERIFY_INTERVAL_SECONDS="0.2",
        # The incident's service stays down: its run fails and waits for a person, so the incident stays open.
        RETRY_WINDOW_SECONDS="3600",
        LOG_LEVEL="WARNING",
    )
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                **({"authorization": {"credentials": TOKEN}} if job != "temporal" else {}),
            }
            for job, port in (("web", web_port), ("worker", worker_port), ("temporal", sdk_port))
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    prometheus = [
        str(PROMETHEUS),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--log.level=warn",
    ]
    urls = {
        "web": f"http://127.0.0.1:{web_port}",
        "worker": f"http://127.0.0.1:{worker_port}",
        "temporal": f"http://127.0.0.1:{sdk_port}",
        "prometheus": f"http://127.0.0.1:{prom_port}",
    }
    auth = {"headers": {"Authorization": f"Bearer {TOKEN}"}}
    with ExitStack() as stack:
        # cwd: a directory without a .env, so only this environment configures them.
        web = stack.enter_context(process([*CLI, "web"], tmp_path / "web.log", env, tmp_path))
        worker = stack.enter_context(process([*CLI, "worker"], tmp_path / "worker.log", env, tmp_path))
        prom = stack.enter_context(process(prometheus, tmp_path / "prometheus.log"))
        _wait_http(f"{urls['web']}/metrics", web, tmp_path / "web.log", "agent-monitor web", **auth)
        _wait_http(f"{urls['worker']}/metrics", worker, tmp_path / "worker.log", "agent-monitor worker", **auth)
        _wait_http(f"{urls['temporal']}/metrics", worker, tmp_path / "worker.log", "the worker's SDK metrics")
        _wait_http(f"{urls['prometheus']}/-/ready", prom, tmp_path / "prometheus.log", "Prometheus")
        yield urls


async def query(prometheus: str, promql: str) -> float | None:
    """The value of an instant query that yields one series (None: no series yet)."""
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as client:
        answer = (await client.get("/api/v1/query", params={"query": promql})).json()
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def eventually(prometheus: str, promql: str, check, what: str) -> float:
    deadline = time.monotonic() + WAIT
    value = None
    while time.monotonic() < deadline:
        value = await query(prometheus, promql)
        if value is not None and check(value):
            return value
        await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=prometheus) as client:
        targets = (await client.get("/api/v1/targets")).json()["data"]["activeTargets"]
    health = [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets]
    raise AssertionError(f"{what}: {promql} = {value} after {WAIT:g}s; targets: {health}")


async def test_prometheus_reads_the_web_and_worker_metrics(stack, engine, service):
    prometheus = stack["prometheus"]
    for endpoint in ("web", "worker"):  # METRICS_TOKEN is set: no scrape without it
        assert httpx.get(f"{stack[endpoint]}/metrics", timeout=10).status_code == 401
    # Before: the web's gauge is scraped (with METRICS_TOKEN) and counts no open incident.
    waiting = 'sum(agent_monitor_incidents{job="web",status=~"open|in_progress"})'
    await eventually(prometheus, waiting, lambda v: v == 0, "the web's incident gauge, before")

    url, state = service
    state.status = 500  # down, and it stays down
    _, token = make_user(engine, "responder")
    async with httpx.AsyncClient(base_url=stack["web"], headers={"Authorization": f"Bearer {token}"}) as api:
        created = await api.post("/api/incidents", json=incident_payload(service_url=url, severity="P1"), timeout=30)
    assert created.status_code == 201, created.text

    # After: the incident moved the web's gauge, its agents moved the worker's step histogram.
    assert await eventually(prometheus, waiting, lambda v: v >= 1, "the web's incident gauge, after") == 1
    p1 = 'sum(agent_monitor_incidents{job="web",severity="P1",status=~"open|in_progress"})'
    assert await query(prometheus, p1) == 1
    steps = 'sum(agent_monitor_step_duration_seconds_count{job="worker",status="succeeded"})'
    await eventually(prometheus, steps, lambda v: v >= 1, "the worker's step histogram")
    monitor = 'sum(agent_monitor_step_duration_seconds_count{job="worker",agent="monitor"})'
    assert await query(prometheus, monitor) >= 1
    # The worker's database pool, and the Temporal SDK's own figures from the same worker.
    assert await query(prometheus, 'agent_monitor_db_pool_size{job="worker"}') == DEFAULT_DB_POOL_SIZE
    activities = 'sum(temporal_activity_execution_latency_seconds_count{job="temporal"})'
    await eventually(prometheus, activities, lambda v: v >= 1, "the SDK's activity latency")
