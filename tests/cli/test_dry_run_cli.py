"""`agent-monitor playbooks dry-run` as a user runs it, against the real app on 127.0.0.1, the real worker and a
real token (issue 23): --wait prints the report; nothing is changed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.commands import CommandRule
from tests.activities.test_remediate_command import script
from tests.factories import make_user

pytestmark = pytest.mark.usefixtures("server")


async def run(args: list[str], server: str, token: str) -> tuple[int, str, str]:
    env = {"AGENT_MONITOR_URL": server, "AGENT_MONITOR_TOKEN": token}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["playbooks", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


async def test_dry_run_waits_and_prints_what_would_happen(api, engine, settings, server, worker, tmp_path: Path):
    marker = tmp_path / "restarted"
    restart = [script(tmp_path, "restart.sh", 'echo restarted >> "$1"\n'), str(marker), "eu-2"]
    settings.command_allowlist = [CommandRule(argv=restart)]
    body = {
        "id": "cli-dry", "name": "CLI dry run", "variables": {"region": "eu-1"},
        "steps": [{"id": "restart", "agent": "remediate_command", "params": {"argv": [*restart[:2], "{{region}}"]}}],
    }  # fmt: skip
    assert (await api.post("/api/playbooks", json=body)).status_code == 201
    _, token = make_user(engine, "responder", username="cli-rita")

    code, out, err = await run(["dry-run", "cli-dry", "--var", "region=eu-2", "--wait"], server, token)
    assert code == 0, err
    assert "DRY RUN #" in out and "completed — nothing was changed (1 would run, 1 would ask)" in out
    assert f'restart (remediate_command): would run — would run argv ["{restart[0]}", "{marker}", "eu-2"]' in out
    assert "(allowlisted: yes)" in out and "approval: would ask role approver or above" in out
    assert not marker.exists()

    code, out, err = await run(["dry-run", "cli-dry", "--var", "zone=a"], server, token)
    assert code == 1 and "variables.vars.zone: not a variable of this playbook" in err
