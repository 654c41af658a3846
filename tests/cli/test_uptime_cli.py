"""`agent-monitor services uptime NAME --range … [--csv]` as an operator runs it, against the real web API (uvicorn)
and Postgres, over rollups written by the monitor's write path."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.api.test_uptime import seed

CLI = [sys.executable, "-m", "cli.main"]


async def test_services_uptime_from_the_command_line(server, api, engine):
    seed(engine)
    token = (await api.post("/api/me/tokens", json={"name": "cli"})).json()["token"]
    env = {**os.environ, "AGENT_MONITOR_URL": server, "AGENT_MONITOR_TOKEN": token}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*CLI, *args], env=env, capture_output=True, text=True, timeout=120
        )

    shown = await cli("services", "uptime", "checkout", "--range", "1h")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("checkout: 1h from ") and "step 1m (minute rollups)" in lines[0]
    assert lines[1] == "  availability 77.778%  (10 checks: 6 up, 1 degraded, 2 down, 1 in maintenance)"
    assert lines[2].startswith("  latency p50 ") and lines[2].endswith("max 2000 ms")
    assert any("checkout is down: opened" in line and "180s" in line for line in lines[3:])

    exported = await cli("services", "uptime", "checkout", "--range", "1h", "--csv")
    assert exported.returncode == 0, exported.stderr
    rows = exported.stdout.splitlines()
    assert rows[0].startswith("# service=checkout range=1h step=1m ") and rows[0].endswith(" timezone=UTC")
    assert rows[1].startswith("bucket_start,service,checks") and len(rows) == 6

    for args, message in [
        (("--range", "2d"), "query.range"),
        (("--range", "7d", "--step", "1m"), "query.step"),
        (("--range", "2d", "--csv"), "query.range"),
    ]:
        refused = await cli("services", "uptime", "checkout", *args)
        assert refused.returncode == 1 and message in refused.stderr, (args, refused.stderr)
    missing = await cli("services", "uptime", "nope")
    assert missing.returncode == 1 and "no service named 'nope'" in missing.stderr
