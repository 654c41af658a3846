"""The whole loop on real parts: a real service process crashes; the monitor sees it fail twice in a row and opens
an incident; its playbook finds the cause in the service's real log file and in a Prometheus-API server's data,
waits for a human to approve the restart, runs the allowlisted restart script, and verify confirms the service is
back; the uptime rows show it down, then up, and the recovery is on the incident."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from core.commands import CommandRule
from core.payloads import WorkflowState
from core.settings import Settings
from tests.api.test_approvals import pending_approval
from tests.factories import wait_for_workflow
from tests.peers import free_port
from tests.peers_prometheus import prometheus_api
from tests.workflows.test_engine import wait_until
from tests.workflows.test_monitoring import (
    incidents_of,
    monitor_settings,
    monitoring,
    recovery_and_messages,
    results,
    state_of,
)

SERVICE = """
import datetime, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log = int(sys.argv[1]), sys.argv[2]


def write(level, message):
    with open(log, "a") as f:
        f.write(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%S}Z {level} {message}\\n")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            write("ERROR", "image cache grew to 2048 MiB: MemoryError while resizing upload 7731")
            write("FATAL", "shop worker out of memory, exiting")
            self.send_response(500)
            self.end_headers()
            self.wfile.flush()
            os._exit(1)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
with open(log + ".pid", "w") as f:
    f.write(str(os.getpid()))
write("INFO", f"shop listening on {port}")
server.serve_forever()
"""

ERRORS_5XX = 'sum by (service) (rate(http_requests_total{service="shop",code=~"5.."}[1m]))'


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_crashed_service_is_detected_diagnosed_restarted_after_approval_and_verified(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "shop.log"
    program = tmp_path / "shop.py"
    program.write_text(SERVICE)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The restart a human approves: start the service again, detached (its own session) from the command.
    restart = executable(
        tmp_path / "restart-shop.sh",
        f'#!/bin/sh\nsetsid "{sys.executable}" "{program}" {port} "{log}" </dev/null >/dev/null 2>&1 &\n'
        'echo "shop restarted"\n',
    )
    first = await asyncio.create_subprocess_exec(sys.executable, str(program), str(port), str(log))
    try:
        await wait_until(lambda: log.exists() and "listening" in log.read_text(), 10, "the service to start")
        assert await answers(f"{base}/health")
        with prometheus_api() as (prometheus, prom):
            prom.series = {ERRORS_5XX: [({"service": "shop"}, 42.0)]}
            stored = await api.post(
                "/api/playbooks",
                json={
                    "id": "shop-recovery",
                    "name": "Shop: diagnose, restart, verify",
                    "incident_type": "service_down",
                    "steps": [
                        {"id": "monitor", "agent": "monitor"},
                        {"id": "logs", "agent": "investigate_logs", "depends_on": ["monitor"]},
                        {"id": "metrics", "agent": "investigate_metrics", "depends_on": ["monitor"]},
                        {"id": "restart", "agent": "remediate_command", "depends_on": ["logs", "metrics"],
                         "params": {"argv": [str(restart)]}},
                        {"id": "verify", "agent": "verify", "depends_on": ["restart"], "fail_on_negative": True,
                         "repeat": {"count": 20, "interval_seconds": 0.5}},
                    ],
                },
            )  # fmt: skip
            assert stored.status_code == 201, stored.text
            service = await api.post(
                "/api/services",
                json={
                    "name": "shop",
                    "check": {"type": "http", "url": f"{base}/health"},
                    "interval_seconds": 1,
                    "timeout_seconds": 1,
                    "failure_threshold": 2,
                    "log_paths": [str(log)],
                    "metrics_queries": [{"name": "errors_5xx", "query": ERRORS_5XX, "threshold": 1,
                                         "unit": " req/s"}],
                    "default_playbook": "shop-recovery",
                },
            )  # fmt: skip
            assert service.status_code == 201, service.text
            worker_settings = monitor_settings(
                settings,
                log_roots=[logs],
                prometheus_url=prometheus,
                command_allowlist=[CommandRule(argv=[str(restart)])],
            )
            async with monitoring(temporal_client, engine, worker_settings):
                await wait_until(lambda: [r.status for r in results(engine, "shop")][-2:] == ["up", "up"], 20,
                                 "two passing checks")  # fmt: skip
                assert not await answers(f"{base}/crash")  # the service dies, writing why to its log
                await first.wait()

                await wait_until(lambda: len(incidents_of(engine, "shop")) == 1, 20, "the incident")
                (incident,) = incidents_of(engine, "shop")
                assert (
                    incident.playbook_id == "shop-recovery"
                    and incident.idempotency_key == f"service:{service.json()['id']}:1"
                )
                assert [r.status for r in results(engine, "shop")][-2:] == ["down", "down"]

                approval = await pending_approval(api, incident.id)
                assert (approval["step_id"], approval["agent"], approval["risk"]) == (
                    "restart", "remediate_command", "high",
                )  # fmt: skip
                assert not await answers(f"{base}/health")  # nothing restarted it before the approval
                decided = await api.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
                assert decided.status_code == 200, decided.text

                assert incident.workflow_id is not None
                outcome, state = await wait_for_workflow(temporal_client, incident.workflow_id)
                assert outcome == "completed", state
                await wait_until(lambda: state_of(engine, "shop").status == "up", 20, "the monitor to see it up")
    finally:
        for pid_file in [log.with_name("shop.log.pid")]:
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if first.returncode is None:
            first.kill()

    steps = {s.step_id: s for s in state.steps}
    assert isinstance(state, WorkflowState)
    # The monitor step saw it down; the investigators found the cause where it is.
    assert steps["monitor"].output["ok"] is False
    assert "MemoryError" in steps["logs"].output["summary"] or any(
        "MemoryError" in f["title"] for f in steps["logs"].output["findings"]
    )
    assert steps["metrics"].output["data"]["breached"] == ["errors_5xx"]
    assert "errors_5xx 42" in steps["metrics"].output["summary"]
    assert steps["restart"].output["ok"] and steps["restart"].output["data"]["stdout"] == "shop restarted\n"
    assert steps["restart"].approval.status == "approved"
    assert steps["verify"].status == "completed" and steps["verify"].output["ok"]

    statuses = [r.status for r in results(engine, "shop")]
    first_down = statuses.index("down")
    assert "up" in statuses[:first_down] and "up" in statuses[first_down:]  # up, down…, up
    downs = [r for r in results(engine, "shop") if r.status == "down"]
    assert downs and all(r.incident_id == incident.id for r in downs)
    recovered, messages = recovery_and_messages(engine, incident.id)
    assert len(recovered) == 1
    assert any(m.startswith("monitor: shop failed 2 check(s) in a row") for m in messages)
    assert any(m.startswith("monitor: shop recovered at") for m in messages)
