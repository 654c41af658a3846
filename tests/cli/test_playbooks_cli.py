"""`agent-monitor playbooks list | show | export | import | preview` as a user runs them, against the real app
served on 127.0.0.1 with a real token (issue 23)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from tests.api.incident_rows import insert_incident
from tests.factories import make_user

pytestmark = pytest.mark.usefixtures("server")


async def run(args: list[str], server: str, token: str) -> tuple[int, str, str]:
    """The command's exit code, stdout and stderr; in a thread, as the server answers on this test's event loop."""
    env = {"AGENT_MONITOR_URL": server, "AGENT_MONITOR_TOKEN": token}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["playbooks", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def definition(pid: str) -> dict:
    return {
        "id": pid,
        "name": "checkout",
        "incident_type": pid,
        "variables": {"region": "eu-1", "retries": {"type": "integer", "default": 3}},
        "steps": [
            {"id": "check", "agent": "noop", "instructions": "Check {{service_name}} in {{vars.region}} x{{retries}}"},
            {"id": "page", "agent": "noop", "depends_on": ["check"], "when": 'incident.severity == "P1"'},
        ],
    }


async def test_export_import_and_preview_from_the_command_line(engine, server, tmp_path: Path):
    _, token = make_user(engine, "responder", username="cli-rita")
    _, admin = make_user(engine, "admin", username="cli-admin")
    pid = f"pb-{uuid.uuid4().hex[:8]}"
    source = tmp_path / "checkout.yaml"
    source.write_text(yaml.safe_dump(definition(pid)), encoding="utf-8")

    code, out, err = await run(["import", str(source)], server, admin)
    assert (code, out.strip()) == (0, f"{pid} v1: created (saved as version 1)"), err
    code, out, _ = await run(["import", str(source)], server, admin)
    assert out.strip() == f"{pid} v1: skipped ({pid} version 1 is already stored with this definition)"

    code, out, _ = await run(["list"], server, token)
    assert code == 0 and any(line.split()[:2] == [pid, "v1"] for line in out.splitlines())
    code, out, _ = await run(["show", pid], server, token)
    assert code == 0 and "  var retries: integer = 3" in out
    assert '  page: noop after check when incident.severity == "P1"' in out

    exported = tmp_path / "out.yaml"
    code, out, _ = await run(["export", pid, "--format", "yaml", "--output", str(exported)], server, token)
    assert code == 0 and out.strip() == f"wrote {exported}"
    code, out, _ = await run(["export", pid, "--format", "yaml", "--version", "1"], server, token)
    assert out == exported.read_text(encoding="utf-8") and yaml.safe_load(out)["syntax"] == 2

    code, out, _ = await run(["preview", pid, "--var", "region=us-2", "--var", "retries=5"], server, token)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"{pid} v1 for the sample incident (sample-service, P3)"
    assert "    Check sample-service in us-2 x5" in lines
    assert lines[-1] == "1 step(s) would not run: page"
    incident_id = insert_incident(engine, title="cart down", service="cart", severity="P1")
    code, out, _ = await run(["preview", pid, "--incident", str(incident_id)], server, token)
    assert "    Check cart in eu-1 x3" in out and out.strip().endswith("every step would run")


async def test_errors_are_one_line_and_a_nonzero_exit(engine, server, tmp_path: Path):
    _, token = make_user(engine, "admin", username="cli-ada")
    pid = f"pb-{uuid.uuid4().hex[:8]}"
    broken = definition(pid)
    broken["steps"][0]["instructions"] = "{{regoin}}"
    broken["steps"][1]["when"] = "incident.severity =="
    source = tmp_path / "broken.yml"
    source.write_text(yaml.safe_dump(broken), encoding="utf-8")
    code, out, err = await run(["import", str(source)], server, token)
    assert code == 1 and out == ""
    assert err.strip() == (
        "error: 2 problems: steps[1].when: condition does not parse: incident.severity == ^; "
        "steps[0].instructions: unknown variable 'regoin'"
    )
    code, _, err = await run(["preview", "no-such-playbook"], server, token)
    assert (code, err.strip()) == (1, "error: playbook no-such-playbook does not exist")
    code, _, err = await run(["preview", "default", "--var", "oops"], server, token)
    assert (code, err.strip()) == (2, "error: --var oops: write name=value")
    code, _, err = await run(["export", "no-such-playbook", "--format", "yaml"], server, token)
    assert (code, err.strip()) == (1, "error: playbook no-such-playbook does not exist")
    code, _, err = await run(["import", str(tmp_path / "missing.json")], server, token)
    assert code == 2 and err.startswith("error: ") and "missing.json" in err


async def test_the_installed_command_exports(engine, server):
    """The real `agent-monitor` entry point has the group (a process of its own)."""
    _, token = make_user(engine, "viewer", username="cli-vic")
    env = {**os.environ, "AGENT_MONITOR_URL": server, "AGENT_MONITOR_TOKEN": token}
    command = [str(Path(sys.executable).parent / "agent-monitor"), "playbooks", "export", "default", "--format", "yaml"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["id"] == "default" and "version: 0" in done.stdout
