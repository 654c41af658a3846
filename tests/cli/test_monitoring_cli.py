"""`agent-monitor services list`, `maintenance start|list|end` and `monitor status` as an operator runs them, against
the real web API (uvicorn), Postgres and the dev server with a monitor running."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.peers import http_service
from tests.workflows.test_engine import wait_until
from tests.workflows.test_monitoring import monitor_settings, monitoring, register, state_of

CLI = [sys.executable, "-m", "cli.main"]


async def test_services_maintenance_and_monitor_status_from_the_command_line(
    server, api, engine, settings, temporal_client
):
    token = (await api.post("/api/me/tokens", json={"name": "cli"})).json()["token"]
    settings = monitor_settings(settings)
    env = {
        **os.environ,
        "AGENT_MONITOR_URL": server,
        "AGENT_MONITOR_TOKEN": token,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "MONITOR_WORKFLOW_ID": settings.monitor_workflow_id,
    }

    async def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*CLI, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    stopped = await cli("monitor", "status")
    assert stopped.returncode == 1 and "not running" in stopped.stdout
    with http_service() as (url, peer):
        peer.status = 503
        await register(api, "checkout", url, failure_threshold=1)
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: (state_of(engine, "checkout") or None) is not None
                             and state_of(engine, "checkout").status == "down", 20, "the outage")  # fmt: skip
            listed = await cli("services", "list")
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.startswith("checkout") and " down " in listed.stdout
            assert "failed in a row" in listed.stdout and "503" in listed.stdout
            status = await cli("monitor", "status")
            assert status.returncode == 0, status.stderr
            assert status.stdout.startswith(f"{settings.monitor_workflow_id}: running,") and "checks" in status.stdout

            started = await cli("maintenance", "start", "checkout", "--minutes", "30", "--reason", "db upgrade")
            assert started.returncode == 0, started.stderr
            window_id = started.stdout.split()[2].rstrip(":")
            windows = await cli("maintenance", "list")
            assert "checkout" in windows.stdout and "active" in windows.stdout and "db upgrade" in windows.stdout
            ended = await cli("maintenance", "end", window_id)
            assert ended.returncode == 0 and ended.stdout.strip() == f"maintenance window {window_id} ended"
            again = await cli("maintenance", "end", window_id)
            assert again.returncode == 1 and again.stderr.strip() == (
                f"error: maintenance window {window_id} has ended already"
            )
    both = await cli("maintenance", "start", "checkout", "--all")
    assert both.returncode == 2 and both.stderr.strip() == "error: name a service or pass --all (not both)"
    ghost = await cli("maintenance", "start", "ghost")
    assert ghost.returncode == 1 and "no service named 'ghost'" in ghost.stderr
