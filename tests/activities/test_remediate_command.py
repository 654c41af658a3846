"""remediate_command on real subprocesses: scripts written to tmp_path (run as argv, no shell), the allowlist, exit
codes, output tails, timeouts and cancellation that kill the whole process group, the minimal environment; and
through the real engine, where its default risk (high) makes the step wait for an approval given through the API."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps
from activities.remediate import RemediateCommandAgent, minimal_environment
from core.commands import CommandRule
from core.payloads import AgentInput, IncidentContext, WorkflowState
from core.settings import Settings
from core.tables import AgentRun, WorkflowStep
from tests.api.test_approvals import pending_approval
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, step
from worker.runner import incident_worker

SPEC = RemediateCommandAgent.spec


def script(tmp_path: Path, name: str, body: str) -> str:
    """A real executable file: argv[0] of a command, run without any shell of ours."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def agent_input(params: dict[str, Any], **extra: Any) -> AgentInput:
    incident = IncidentContext(incident_id=7, title="checkout is failing", service="checkout", severity="P2")
    return AgentInput(incident=incident, workflow_id="incident-7", step_id="fix", params=params, **extra)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def command_agent(http: httpx.AsyncClient, allowlist: list[Any], **settings: Any) -> RemediateCommandAgent:
    config = Settings(_env_file=None, command_allowlist=allowlist, **settings)  # type: ignore[call-arg]
    return RemediateCommandAgent(AgentDeps(http=http, settings=config))


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (this machine's init does not reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def gone(*pids: int) -> bool:
    """Whether the processes are gone within 3 s: SIGKILL is delivered, not awaited (a busy machine lags)."""
    deadline = time.monotonic() + 3
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not any(running(pid) for pid in pids)


async def test_an_allowlisted_script_runs_and_its_output_is_captured(http, tmp_path):
    fix = script(tmp_path, "fix.sh", 'echo "restarted $1"\necho "cache was cold" >&2\n')
    result = await command_agent(http, [{"argv": [fix, "{service}"]}]).run(agent_input({"argv": [fix, "checkout"]}))
    assert result.ok
    assert result.summary.startswith(f"ran {fix} checkout: exit 0 in ") and result.summary.endswith(" s")
    data = result.data
    assert (data["argv"], data["executable"], data["exit_code"]) == ([fix, "checkout"], fix, 0)
    assert (data["stdout"], data["stderr"]) == ("restarted checkout\n", "cache was cold\n")
    assert (data["truncated"], data["timed_out"]) == (False, False)
    assert 0 <= data["duration_ms"] < 5000
    assert result.findings == []
    (message,) = result.messages
    assert message["role"] == "tool"
    assert f"$ {fix} checkout" in message["content"] and "restarted checkout" in message["content"]


async def test_argv0_is_resolved_on_the_minimal_path_and_the_absolute_path_recorded(http, tmp_path):
    agent = command_agent(http, [{"argv": ["echo", "ok", "{name}"]}])
    result = await agent.run(agent_input({"argv": ["echo", "ok", "done"]}))
    assert result.ok and result.data["stdout"] == "ok done\n"
    assert os.path.isabs(result.data["executable"]) and result.data["executable"].endswith("/echo")


async def test_exit_codes_decide_ok_and_the_summary_quotes_stderr(http, tmp_path):
    broken = script(
        tmp_path, "broken.sh", 'echo "checking"\necho "step 1 fine" >&2\necho "boom: disk full" >&2\nexit 3\n'
    )
    agent = command_agent(http, [[broken]])
    failed = await agent.run(agent_input({"argv": [broken]}))
    assert not failed.ok and failed.data["exit_code"] == 3
    assert failed.summary == f"ran {broken}: exit 3 (stderr: boom: disk full)"
    (finding,) = failed.findings
    assert finding["severity"] == "high" and "boom: disk full" in finding["detail"]
    expected = await agent.run(agent_input({"argv": [broken], "expect_exit": 3}))
    assert expected.ok and expected.summary.startswith(f"ran {broken}: exit 3 in ")
    quiet = script(tmp_path, "quiet.sh", "exit 0\n")
    wrong = await command_agent(http, [[quiet]]).run(agent_input({"argv": [quiet], "expect_exit": 2}))
    assert not wrong.ok and wrong.summary == f"ran {quiet}: exit 0, expected 2"


async def test_a_megabyte_of_output_keeps_the_last_16_kb(http, tmp_path):
    noisy = script(
        tmp_path, "noisy.sh", "yes 0123456789 | head -c 1048576\necho\necho END\nyes e | head -c 100000 >&2\n"
    )
    result = await command_agent(http, [[noisy]]).run(agent_input({"argv": [noisy]}))
    assert result.ok and result.data["truncated"]
    stdout, stderr = result.data["stdout"], result.data["stderr"]
    # The last 16 KiB, from the first whole line in them (a cut line could start inside a secret):
    assert 16 * 1024 - 11 <= len(stdout.encode()) <= 16 * 1024 and stdout.startswith("0123456789\n")
    assert stdout.endswith("0123456789\n0\nEND\n")  # 2**20 = 11 * 95325 + 1
    assert 16 * 1024 - 2 <= len(stderr.encode()) <= 16 * 1024 and set(stderr) == {"e", "\n"}
    assert len(result.messages[0]["content"]) < 5000  # the conversation gets less still


async def test_a_timeout_kills_the_whole_process_group(http, tmp_path):
    slow = script(tmp_path, "slow.sh", 'sleep 60 &\necho "$!"\necho "$$"\nwait\n')
    started = time.monotonic()
    result = await command_agent(http, [[slow]]).run(agent_input({"argv": [slow], "timeout_seconds": 1}))
    assert time.monotonic() - started < 1 + 5 + 3  # the timeout, at most the SIGTERM grace, some slack
    assert not result.ok and result.data["timed_out"]
    assert "timed out after 1 s" in result.summary
    child, parent = (int(line) for line in result.data["stdout"].split())
    assert await gone(child, parent)


@pytest.mark.slow  # waits out the 5 s SIGTERM grace
async def test_what_ignores_sigterm_gets_sigkill_after_the_grace(http, tmp_path):
    stubborn = script(tmp_path, "stubborn.sh", 'trap \'\' TERM\nsleep 60 &\necho "$!"\necho "$$"\nwait\n')
    started = time.monotonic()
    result = await command_agent(http, [[stubborn]]).run(agent_input({"argv": [stubborn], "timeout_seconds": 0.5}))
    assert 0.5 + 5 <= time.monotonic() - started < 0.5 + 5 + 3
    assert result.data["timed_out"] and result.data["exit_code"] == -9
    child, parent = (int(line) for line in result.data["stdout"].split())
    assert await gone(child, parent)


async def test_cancelling_the_agent_kills_the_command(http, tmp_path):
    pids = tmp_path / "pids"
    slow = script(tmp_path, "slow.sh", f'sleep 60 &\necho "$! $$" > {pids}.tmp\nmv {pids}.tmp {pids}\nwait\n')
    task = asyncio.create_task(command_agent(http, [[slow]]).run(agent_input({"argv": [slow]})))
    while not pids.exists():
        await asyncio.sleep(0.05)
    child, parent = (int(pid) for pid in pids.read_text().split())
    assert running(child) and running(parent)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(child, parent)


async def test_shell_metacharacters_are_inert(http, tmp_path):
    marker = tmp_path / "x"
    words = [f"a; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"| touch {marker}", "*"]
    free = {"argv": ["/bin/echo", "{...}"]}  # an explicit free tail: argv words are still never a shell's
    result = await command_agent(http, [free]).run(agent_input({"argv": ["/bin/echo", *words]}))
    assert result.ok and result.data["stdout"] == " ".join(words) + "\n"
    assert not marker.exists()


async def test_commands_off_the_allowlist_are_refused_for_good(http, tmp_path):
    fix = script(tmp_path, "fix.sh", f"touch {tmp_path}/ran\n")
    with pytest.raises(ApplicationError) as empty:
        await command_agent(http, []).run(agent_input({"argv": [fix]}))
    assert empty.value.non_retryable
    assert empty.value.message == "remediate_command runs nothing until COMMAND_ALLOWLIST is set"
    with pytest.raises(ApplicationError) as other:
        await command_agent(http, [[fix, "checkout"]]).run(agent_input({"argv": [fix, "payments"]}))
    assert other.value.non_retryable and other.value.type == "NotAllowed"
    assert other.value.message == (f"command {[fix, 'payments']!r} is not allowlisted: closest entry "
                                f"{[fix, 'checkout']!r}: word 2 'payments' must be 'checkout'")  # fmt: skip
    assert not (tmp_path / "ran").exists()


async def test_what_a_prefix_entry_let_through_no_longer_runs(http, tmp_path):
    """The review's findings: `find DIR -name` ran `-exec touch …` and `-fprint FILE`; `tar -cf FILE` ran
    `--checkpoint-action=exec=…`; TAR_OPTIONS made tar run a command. Real find and tar, a marker each."""
    marker = tmp_path / "pwned"
    (tmp_path / "logs").mkdir()
    logs = str(tmp_path / "logs")
    find = command_agent(http, [["find", logs, "-name"]])  # a plain list: now the whole argv, nothing more
    tar = command_agent(http, [{"argv": ["tar", "-cf", f"{{path:{tmp_path}}}", "--", f"{{path:{logs}}}"]}])
    attempts = [
        (find, {"argv": ["find", logs, "-name", "x", "-exec", "touch", str(marker), ";"]}),
        (find, {"argv": ["find", logs, "-name", "x", "-fprint", str(marker)]}),
        (tar, {"argv": ["tar", "-cf", f"{tmp_path}/a.tar", "--", logs, f"--checkpoint-action=exec=touch {marker}"]}),
        (tar, {"argv": ["tar", "-cf", f"--checkpoint-action=exec=touch {marker}", "--", logs]}),
        (tar, {"argv": ["tar", "-cf", f"{tmp_path}/a.tar", "--", logs],
               "env": {"TAR_OPTIONS": f"--checkpoint=1 --checkpoint-action=exec=touch {marker}"}}),
    ]  # fmt: skip
    for agent, params in attempts:
        with pytest.raises(ApplicationError) as refused:
            await agent.run(agent_input(params))
        assert refused.value.type == "NotAllowed" and refused.value.non_retryable, params
    assert not marker.exists()
    archived = await tar.run(agent_input({"argv": ["tar", "-cf", f"{tmp_path}/a.tar", "--", logs]}))
    assert archived.ok and (tmp_path / "a.tar").exists() and not marker.exists()


async def test_configuration_errors_are_not_retried(http, tmp_path):
    fix = script(tmp_path, "fix.sh", "exit 0\n")
    rules = [{"argv": [fix], "cwd": f"{{path:{tmp_path}}}"}, ["no-such-command-here"]]
    agent = command_agent(http, rules, command_timeout_seconds=30)
    with pytest.raises(ApplicationError) as too_long:
        await agent.run(agent_input({"argv": [fix], "timeout_seconds": 31}))
    assert too_long.value.non_retryable and "above COMMAND_TIMEOUT_SECONDS (30)" in str(too_long.value)
    with pytest.raises(ApplicationError) as missing:
        await agent.run(agent_input({"argv": ["no-such-command-here"]}))
    assert missing.value.non_retryable and "no-such-command-here is not an executable on PATH" in str(missing.value)
    with pytest.raises(ApplicationError) as no_dir:
        await agent.run(agent_input({"argv": [fix], "cwd": str(tmp_path / "gone")}))
    assert no_dir.value.non_retryable and "cannot start" in str(no_dir.value)


async def test_the_environment_is_minimal_plus_the_given_variables(http, tmp_path):
    show = script(tmp_path, "env.sh", "pwd\nenv\n")
    params = {"argv": [show], "env": {"REGION": "eu-west-1", "DRY_RUN": "a b; c"}, "cwd": str(tmp_path)}
    entry = {"argv": [show], "env": ["REGION", "DRY_RUN"], "cwd": str(tmp_path)}
    result = await command_agent(http, [entry]).run(agent_input(params))
    cwd, *lines = result.data["stdout"].splitlines()
    assert cwd == str(tmp_path)
    seen = dict(line.split("=", 1) for line in lines)
    seen.pop("PWD")  # the shell running the script sets it itself
    assert seen == {**minimal_environment(), "REGION": "eu-west-1", "DRY_RUN": "a b; c"}
    assert set(minimal_environment()) == {"PATH", "LANG", "HOME"}


def test_params_are_checked_against_the_schema():
    assert SPEC.default_risk == "high" and SPEC.capabilities == ("remediation",)
    assert SPEC.params_problem({"argv": ["systemctl", "restart", "checkout"], "env": {"REGION": "eu"}}) is None
    for params, field in (
        ({}, "params: 'argv' is a required property"),
        ({"argv": []}, "params.argv"),
        ({"argv": ["x"] * 101}, "params.argv"),
        ({"argv": "systemctl restart"}, "params.argv"),
        ({"argv": ["x"], "cwd": "relative/dir"}, "params.cwd"),
        ({"argv": ["x"], "timeout_seconds": 0}, "params.timeout_seconds"),
        ({"argv": ["x"], "env": {"region": "eu"}}, "params.env"),
        ({"argv": ["x"], "env": {"LD_PRELOAD": "/tmp/evil.so"}}, "params.env"),
        ({"argv": ["x"], "env": {"PATH": "/tmp"}}, "params.env"),
        ({"argv": ["x"], "env": {"PYTHONPATH": "/tmp"}}, "params.env"),
        ({"argv": ["x"], "env": {"HOME": "/tmp/evil"}}, "params.env"),
        ({"argv": ["x"], "env": {"GIT_SSH_COMMAND": "sh -c id"}}, "params.env"),
        ({"argv": ["x"], "env": {"OPENSSL_CONF": "/tmp/engine.cnf"}}, "params.env"),
        ({"argv": ["x"], "env": {"TAR_OPTIONS": "--to-command=sh"}}, "params.env"),
        ({"argv": ["x"], "env": {"PERL5OPT": "-Mevil"}}, "params.env"),
        ({"argv": ["x"], "env": {"LESSOPEN": "|sh %s"}}, "params.env"),
        ({"argv": ["x"], "env": {"MAKEFLAGS": "--eval=x"}}, "params.env"),
        ({"argv": ["x"], "env": {"WGETRC": "/tmp/rc"}}, "params.env"),
        ({"argv": ["x"], "shell": True}, "params: Additional properties are not allowed"),
    ):
        problem = SPEC.params_problem(params)
        assert problem is not None and problem.startswith(field), (params, problem)


async def test_bad_params_are_refused_when_the_playbook_is_stored(api):
    body = {"id": "bad-command", "name": "bad", "incident_type": "bad-command",
            "steps": [{"id": "restart", "agent": "remediate_command", "params": {"argv": []}}]}  # fmt: skip
    refused = await api.post("/api/playbooks", json=body)
    assert refused.status_code == 422
    assert "step restart: params.argv: [] should be non-empty" in refused.text


async def test_in_a_playbook_it_waits_for_approval_then_runs(api, temporal_client: Client, engine, settings, tmp_path):
    marker = tmp_path / "restarted"
    fix = script(tmp_path, "restart.sh", 'touch "$1"\necho "restarted checkout"\n')
    settings.command_allowlist = [CommandRule(argv=[fix, f"{{path:{tmp_path}}}"])]
    incident = await run_playbook(
        api, [step("check"), step("restart", "remediate_command", "check", params={"argv": [fix, str(marker)]})]
    )
    workflow_id = incident["workflow_id"]
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        approval = await pending_approval(api, incident["id"])
        assert (approval["step_id"], approval["risk"], approval["agent"]) == ("restart", "high", "remediate_command")
        state = await temporal_client.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState)
        assert state.status == "waiting_approval"
        assert not marker.exists()  # nothing ran before a human said so
        decided = await api.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed" and marker.exists()
    restart = next(s for s in state.steps if s.step_id == "restart")
    assert restart.status == "completed" and restart.approval.status == "approved"
    assert restart.output["ok"] and restart.output["data"]["stdout"] == "restarted checkout\n"
    assert restart.output["summary"].startswith(f"ran {fix} {marker}: exit 0 in ")
    with Session(engine) as session:
        attempts = session.exec(select(AgentRun).where(AgentRun.workflow_id == workflow_id,
                                                       AgentRun.step_id == "restart")).all()  # fmt: skip
        stored = session.exec(select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id,
                                                         WorkflowStep.step_id == "restart")).one()  # fmt: skip
    assert [(a.agent, a.status) for a in attempts] == [("remediate_command", "succeeded")]
    assert stored.status == "completed" and stored.output["data"]["exit_code"] == 0


async def test_output_is_redacted_before_it_is_cut(tmp_path):
    """Issue 19, finding 7: remediate_command cut its output (the summary's last line at 200 characters, the
    evidence's tail) before redacting the result, so a cut could leave part of a secret that no shape matched."""
    secret = "ghp_" + "A1b2C3d4" * 5
    padding = "x" * 171  # the last line's 200-character cut falls inside the token, 19 characters into it
    body = f'echo "failed: {padding} {secret} rejected" >&2\nexit 3\n'
    fix = script(tmp_path, "fix.sh", body)
    settings = Settings(_env_file=None, command_allowlist=[{"argv": [fix]}], remediation_budget=0)  # type: ignore[call-arg]
    async with httpx.AsyncClient() as http:
        agent = RemediateCommandAgent(AgentDeps(http=http, settings=settings))
        result = await agent.run(agent_input({"argv": [fix]}))
    assert not result.ok
    shown = json.dumps(msgspec.to_builtins(result))
    assert secret[:8] not in shown.replace("ghp_[REDACTED]", "")  # no run of the token, whole or cut
    assert "A1b2C3d4" not in shown
