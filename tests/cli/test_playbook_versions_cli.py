"""`agent-monitor playbooks versions | diff | restore | fork | share` as a user runs them, against the real app
served on 127.0.0.1 with a real token (issue 23)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import typer
from typer.testing import CliRunner

from cli.playbook_versions import add_version_commands
from tests.factories import make_user

pytestmark = pytest.mark.usefixtures("server")


def group() -> typer.Typer:
    playbooks = typer.Typer(no_args_is_help=True)
    add_version_commands(playbooks)
    return playbooks


async def run(args: list[str], server: str, token: str) -> tuple[int, str]:
    """The command's exit code and output; in a thread, as the server answers on this test's event loop."""
    env = {"AGENT_MONITOR_URL": server, "AGENT_MONITOR_TOKEN": token}
    result = await asyncio.to_thread(CliRunner().invoke, group(), args, env=env)
    return result.exit_code, result.output


async def test_versions_diff_restore_fork_and_share_from_the_command_line(api, engine, server):
    _, token = make_user(engine, "admin", username="cli-admin")
    pid, fork_id = f"pb-{uuid.uuid4().hex[:8]}", f"pb-{uuid.uuid4().hex[:8]}"
    steps = [{"id": "monitor", "agent": "noop", "params": {"summary": "503"}}]
    body = {"id": pid, "name": "checkout", "incident_type": pid, "steps": steps}
    assert (await api.post("/api/playbooks", json=body | {"message": "first"})).status_code == 201
    changed = {**body, "steps": [{**steps[0], "params": {"summary": "502"}}]}
    assert (await api.post("/api/playbooks", json=changed | {"message": "502 now"})).status_code == 201

    code, out = await run(["diff", pid, "1", "2"], server, token)
    assert code == 0, out
    assert "-    summary: '503'" in out and "+    summary: '502'" in out

    code, out = await run(["restore", pid, "1"], server, token)
    assert (code, out.strip()) == (0, f"{pid} v3: restored from v1")

    code, out = await run(["versions", pid], server, token)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["v1", "v2", "v3"]
    assert lines[0].endswith("root             first") and lines[2].endswith("cli-admin        restored from v1")

    code, out = await run(["fork", pid, fork_id, "--version", "2", "--name", "mine"], server, token)
    assert (code, out.strip()) == (0, f"{fork_id} v1 (mine), forked from {pid} v2")
    code, out = await run(["versions", fork_id], server, token)
    assert f"(forked from {pid} v2)" in out

    await api.post("/api/teams", json={"name": "sre"})
    code, out = await run(["share", pid, "--team", "sre", "--visibility", "team"], server, token)
    assert (code, out.strip()) == (0, f"{pid}: owner team sre, visible to team")
    assert (await api.get(f"/api/playbooks/{pid}")).json()["sharing"] == {"owner_team": "sre", "visibility": "team"}


async def test_refusals_are_one_line_errors(engine, server):
    _, token = make_user(engine, "responder", username="cli-rita")
    code, out = await run(["versions", "no-such-playbook"], server, token)
    assert (code, out.strip()) == (1, "error: playbook no-such-playbook does not exist")
    code, out = await run(["share", "no-such-playbook", "--visibility", "team"], server, token)
    assert code == 1 and out.startswith("error: ")
