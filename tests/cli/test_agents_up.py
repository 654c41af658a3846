"""The marketplace end to end, as an operator uses it: `agent-monitor up`, an index served over HTTP, agents
installed and updated with `agent-monitor agents …`, the worker restarting (one drain, exit 75, started again by
`up`) to load them, and an incident whose step runs on the old version finishing on it while the update lands."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from cli.agent_scaffold import build_wheel, scaffold
from tests.api.market import Market, served
from tests.cli.upstack import Up, api, cli, up_env

pytestmark = pytest.mark.slow


def _wait(predicate, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _incident(up: Up, token: str, agent: str, params: dict) -> int:
    kind = f"t-{uuid.uuid4().hex[:8]}"
    steps = [{"id": "s", "agent": agent, "params": params}]
    playbook = {"id": kind, "name": kind, "incident_type": kind, "steps": steps}
    stored = api(up, "POST", "/api/playbooks", token, json=playbook)
    assert stored.status_code == 201, stored.text
    created = api(up, "POST", "/api/incidents", token, json={"title": "disk", "service": "db", "incident_type": kind})
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def _finished(up: Up, token: str, incident_id: int, timeout: float = 180) -> dict:
    found: dict = {}

    def done() -> bool:
        found.update(api(up, "GET", f"/api/incidents/{incident_id}", token).json())
        return (found.get("workflow") or {}).get("status") in ("completed", "failed")

    _wait(done, f"incident {incident_id}", timeout)
    return found


def _summary(up: Up, token: str, incident: dict) -> str:
    state = api(up, "GET", f"/api/workflows/{incident['workflow_id']}", token).json()
    (step,) = state["steps"]
    return str(step["output"]["summary"])


def test_install_update_during_a_running_step_and_a_scaffolded_agent(tmp_path: Path):
    gate, started = tmp_path / "gate", tmp_path / "started"
    # v1 says it started, then waits for the gate: the update lands while it runs.
    body = (
        f"open({str(started)!r}, 'w').close(); import asyncio, os\n"
        f"        while not os.path.exists({str(gate)!r}): await asyncio.sleep(0.1)"
    )
    market = Market(tmp_path / "market")
    market.add(
        "slow_probe",
        [
            market.python_version("slow_probe", "1.0.0", body=body, changelog="First"),
            market.python_version("slow_probe", "1.1.0", changelog="Faster"),
        ],
    )
    market.write()
    project = scaffold("disk_check", "investigation", webhook=False, dest=tmp_path / "disk_check")
    wheel = build_wheel(project, tmp_path / "dist")

    with served(market) as index_url:
        env = up_env(tmp_path / "data")
        env["AGENT_INDEXES"] = index_url
        up = Up(env)
        try:
            up.wait_ready()
            token = cli(env, "tokens", "create", "--user", "admin", "--name", "agents-test")
            assert token.returncode == 0, token.stderr
            env["AGENT_MONITOR_TOKEN"] = token.stdout.strip()

            found = cli(env, "agents", "search", "probe")
            assert found.returncode == 0 and "slow_probe" in found.stdout and "1.1.0" in found.stdout, found.stdout
            mark = len(up.lines)
            installed = cli(env, "agents", "install", "slow_probe", "--version", "1.0.0")
            assert installed.returncode == 0, installed.stderr
            assert "slow_probe: install 1.0.0 (python)" in installed.stdout
            up.wait_line(r"worker asked to be restarted \(code 75\)", start=mark)
            up.wait_line(r"worker started again", start=mark)

            first = _incident(up, env["AGENT_MONITOR_TOKEN"], "slow_probe", {"path": "/var"})
            _wait(started.exists, "the v1 step to start")
            mark = len(up.lines)
            updated = cli(env, "agents", "update", "slow_probe", "--yes")
            assert updated.returncode == 0, updated.stderr
            assert "slow_probe: 1.0.0 → 1.1.0" in updated.stdout and "1.1.0: Faster" in updated.stdout
            up.wait_line(r"installed agents changed \(slow_probe 1.0.0 → 1.1.0\): draining", start=mark)
            time.sleep(1)  # the worker is draining: the running v1 step holds it
            assert not any("asked to be restarted" in line for line in up.lines[mark:])
            gate.touch()
            done = _finished(up, env["AGENT_MONITOR_TOKEN"], first)
            assert done["workflow"]["status"] == "completed", done
            assert _summary(up, env["AGENT_MONITOR_TOKEN"], done) == "slow_probe 1.0.0 looked at /var"
            up.wait_line(r"worker asked to be restarted \(code 75\)", start=mark)

            second = _incident(up, env["AGENT_MONITOR_TOKEN"], "slow_probe", {"path": "/srv"})
            done = _finished(up, env["AGENT_MONITOR_TOKEN"], second)
            assert done["workflow"]["status"] == "completed", done
            assert _summary(up, env["AGENT_MONITOR_TOKEN"], done) == "slow_probe 1.1.0 looked at /srv"

            # A scaffolded agent, built here, installed from its wheel file, runs in a playbook.
            mark = len(up.lines)
            local = cli(env, "agents", "install", str(wheel))
            assert local.returncode == 0, local.stderr
            assert "disk_check: install 0.1.0" in local.stdout
            up.wait_line(r"worker started again", start=mark)
            listed = cli(env, "agents", "list", "--capability", "investigation")
            assert "disk_check" in listed.stdout and "marketplace (wheel)" in listed.stdout, listed.stdout
            health = f"{env['AGENT_MONITOR_URL']}/healthz"
            third = _incident(up, env["AGENT_MONITOR_TOKEN"], "disk_check", {"url": health})
            outcome = _finished(up, env["AGENT_MONITOR_TOKEN"], third)
            assert outcome["workflow"]["status"] == "completed", outcome

            refused = cli(env, "agents", "remove", "slow_probe", "--yes")
            assert refused.returncode == 1 and "used by the playbook" in refused.stderr
        finally:
            code = up.stop()
    assert code == 0, up.output[-3000:]
