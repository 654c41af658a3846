"""`agent-monitor up` as a user runs it: a real process tree, Ctrl-C, and a restart on the same data."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest

from core.temporal_dev import temporal_binary
from tests.cli.upstack import Up, cli, postgres_processes, up_env
from tests.peers import http_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # starts the whole stack twice, as `make run` does


def test_up_runs_an_incident_end_to_end_stops_cleanly_and_keeps_data(tmp_path):
    data_dir = tmp_path / "data"
    env = up_env(data_dir)
    web_port, temporal_port, ui_port = env["WEB_PORT"], env["TEMPORAL_PORT"], env["TEMPORAL_UI_PORT"]

    first = Up(env)
    try:
        first.wait_ready()
        output = "\n".join(first.lines)
        assert f"Dashboard:   http://127.0.0.1:{web_port}" in output
        assert f"Temporal UI: http://127.0.0.1:{ui_port}" in output
        assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10).status_code == 200
        assert "created the first admin: log in as 'admin' with password" in output
        assert (data_dir / "initial-admin-password").stat().st_mode & 0o077 == 0
        # Background work yields the CPU to the web and Postgres (BACKGROUND_NICE, 10 by default).
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert {name: first.child(name).nice() - own for name in ("worker", "temporal", "web", "postgres")} == {
            "worker": 10,
            "temporal": 10,
            "web": 0,
            "postgres": 0,
        }

        unauthenticated = cli(env, "incident", "show", "1")
        assert unauthenticated.returncode == 1 and "no API token" in unauthenticated.stderr
        token = cli(env, "tokens", "create", "--user", "admin", "--name", "up-test")
        assert token.returncode == 0, token.stderr
        env["AGENT_MONITOR_TOKEN"] = token.stdout.strip()

        with http_service() as (url, _):
            created = cli(
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

        bad = cli(env, "incident", "create", "--title", "x", "--service", "api", "--severity", "P7")
        assert bad.returncode == 1
        assert bad.stderr.strip() == "error: severity: Input should be 'P1', 'P2', 'P3' or 'P4'"
    finally:
        code = first.stop()
    assert code == 0
    assert postgres_processes(data_dir) == []
    assert first.lines[-1].startswith("stopped ")

    second = Up(env)
    try:
        second.wait_ready()
        assert "log in as 'admin' with the initial password in" in "\n".join(second.lines)
        shown = cli(env, "incident", "show", str(incident_id))
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
        assert second.stop() == 0
    assert postgres_processes(data_dir) == []

    after = cli(env, "incident", "show", str(incident_id))
    assert after.returncode == 1
    assert after.stderr.startswith("error: cannot reach Agent Monitor at")
