"""`agent-monitor up` as a user runs it: a real process tree, Ctrl-C, and a restart on the same data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from core.temporal_dev import temporal_binary
from tests.peers import free_port, http_service

pytestmark = pytest.mark.slow  # starts the whole stack, as `make run` does

CLI = [sys.executable, "-m", "cli.main"]


class Up:
    """One `agent-monitor up` run, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen([*CLI, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "Agent Monitor is up." in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 120) -> None:
        if not self.ready.wait(timeout):
            self.proc.kill()
            raise AssertionError("up did not get ready:\n" + "\n".join(self.lines[-40:]))

    def interrupt(self, timeout: float = 60) -> int:
        tree = self.proc_tree()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        time.sleep(0.3)
        alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"orphans after Ctrl-C: {alive}"
        return code

    def proc_tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_up_runs_an_incident_end_to_end_stops_cleanly_and_keeps_data(tmp_path):
    data_dir = tmp_path / "data"
    web_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
    env.update(
        DATA_DIR=str(data_dir),
        WEB_PORT=str(web_port),
        TEMPORAL_PORT=str(temporal_port),
        TEMPORAL_UI_PORT=str(ui_port),
        AGENT_MONITOR_URL=f"http://127.0.0.1:{web_port}",
        OUTBOUND_ALLOW_LOOPBACK="true",  # the service it checks runs on this machine
    )

    first = Up(env)
    try:
        first.wait_ready()
        output = "\n".join(first.lines)
        assert f"Dashboard:   http://127.0.0.1:{web_port}" in output
        assert f"Temporal UI: http://127.0.0.1:{ui_port}" in output
        assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
        assert "created the first admin: log in as 'admin' with password" in output
        assert (data_dir / "initial-admin-password").stat().st_mode & 0o077 == 0

        unauthenticated = _cli(env, "incident", "show", "1")
        assert unauthenticated.returncode == 1 and "no API token" in unauthenticated.stderr
        token = _cli(env, "tokens", "create", "--user", "admin", "--name", "up-test")
        assert token.returncode == 0, token.stderr
        env["AGENT_MONITOR_TOKEN"] = token.stdout.strip()

        with http_service() as (url, _):
            created = _cli(
                env,
                "incident",
                "create",
                "--title",
                "checkout 500s",
                "--service",
                "checkout",
                "--severity",
                "P2",
                "--service-url",
                url,
                "--json",
            )
            assert created.returncode == 0, created.stderr
            incident_id = json.loads(created.stdout)["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                detail = httpx.get(
                    f"http://127.0.0.1:{web_port}/api/incidents/{incident_id}",
                    headers={"Authorization": f"Bearer {env['AGENT_MONITOR_TOKEN']}"},
                    timeout=5,
                ).json()
                if detail["workflow"]["status"] in ("completed", "failed"):
                    break
                time.sleep(0.2)
        assert detail["workflow"]["status"] == "completed", detail
        assert detail["status"] == "resolved"

        bad = _cli(env, "incident", "create", "--title", "x", "--service", "api", "--severity", "P7")
        assert bad.returncode == 1
        assert bad.stderr.strip() == "error: severity: Input should be 'P1', 'P2', 'P3' or 'P4'"
    finally:
        code = first.interrupt()
    assert code == 0
    assert _postgres_processes(data_dir) == []
    assert "stopped" in first.lines[-1]

    second = Up(env)
    try:
        second.wait_ready()
        assert "log in as 'admin' with the initial password in" in "\n".join(second.lines)
        shown = _cli(env, "incident", "show", str(incident_id))
        assert shown.returncode == 0, shown.stderr
        assert f"#{incident_id} [P2] checkout 500s" in shown.stdout
        assert "resolved" in shown.stdout and "verified: checkout answers HTTP 200" in shown.stdout
        history = subprocess.run(
            [
                str(temporal_binary()),
                "workflow",
                "describe",
                "-w",
                f"incident-{incident_id}",
                "--address",
                f"127.0.0.1:{temporal_port}",
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert history.returncode == 0, history.stderr
        info = json.loads(history.stdout)["workflowExecutionInfo"]
        assert info["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
        assert info["type"]["name"] == "IncidentWorkflow"
    finally:
        assert second.interrupt() == 0
    assert _postgres_processes(data_dir) == []

    after = _cli(env, "incident", "show", str(incident_id))
    assert after.returncode == 1
    assert after.stderr.startswith("error: cannot reach Agent Monitor at")
