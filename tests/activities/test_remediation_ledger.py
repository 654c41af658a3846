"""Side effects at most once per step attempt (remediation_runs), on real Postgres, real subprocesses, a real
receiver and, for the crash, a real worker process SIGKILLed mid-command: a retry with the same attempt key
reports the first outcome instead of acting again, refuses when there is none, and concurrent duplicates act
once; a person's retry (a new run of the step) is a new attempt."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from activities.approvals import ApprovalActivities
from activities.base import AgentDeps
from activities.remediate import RemediateCommandAgent, RemediateWebhookAgent
from activities.remediation_ledger import OUTCOME_UNKNOWN, attempt_key
from core.approvals import Approval, ApprovalEvent
from core.commands import CommandRule
from core.payloads import AgentInput, ApprovalRequest, ApprovalTicket, IncidentContext, StepRecord
from core.settings import Settings
from core.tables import Incident, RemediationRun
from tests.activities.test_remediate_command import script
from tests.activities.test_remediate_webhook import PAYLOAD, SECRET, receiver
from tests.api.test_approvals import pending_approval
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, step, wait_until
from tests.workflows.test_worker_crash import start_worker

APPENDS = 'echo "started $$" >> "$1"\n'  # one line per run, with the pid of the run's process group


def agent_input(step_id: str, params: dict[str, Any], **extra: Any) -> AgentInput:
    incident = IncidentContext(incident_id=7, title="checkout is failing", service="checkout", severity="P2")
    return AgentInput(incident=incident, workflow_id="incident-7", step_id=step_id, params=params, **extra)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def command_agent(http: httpx.AsyncClient, engine, fix: str, folder: Path, budget: int = 0) -> RemediateCommandAgent:
    """budget 0: these tests share incident 7, and the remediation budget has a test of its own."""
    settings = Settings(_env_file=None, command_allowlist=[{"argv": [fix, f"{{path:{folder}}}"]}],  # type: ignore[call-arg]
                        remediation_budget=budget)  # fmt: skip
    return RemediateCommandAgent(AgentDeps(http=http, settings=settings, engine=engine))


def webhook_agent(http: httpx.AsyncClient, engine) -> RemediateWebhookAgent:
    settings = Settings(_env_file=None, remediation_webhook_secret=SECRET, remediation_budget=0)  # type: ignore[call-arg]
    return RemediateWebhookAgent(AgentDeps(http=http, settings=settings, engine=engine))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def recorded(engine, step_id: str) -> list[RemediationRun]:
    with Session(engine) as session:
        return list(session.exec(select(RemediationRun).where(RemediationRun.step_id == step_id)).all())


def test_the_attempt_key_is_the_steps_run_and_check_never_temporals_attempt():
    incident = IncidentContext(incident_id=7, title="t", service="checkout", severity="P2")
    first = AgentInput(incident=incident, workflow_id="incident-7", step_id="fix", run=1)
    assert attempt_key(first) == "1"
    assert attempt_key(AgentInput(incident=incident, workflow_id="incident-7", step_id="fix", run=2)) == "2"
    record = StepRecord(incident_id=7, agent="remediate_command", position=1, runs=1, started_at="", seq_base=0)
    first.record = record
    assert attempt_key(first) == "1"  # the first check of a step keeps the key (and the webhook-id) it had
    record.check, record.checks = 2, 3
    assert attempt_key(first) == "1.2"  # a repeated step's next check acts anew


async def test_the_same_step_attempt_runs_the_command_once_and_reports_the_first_outcome(http, engine, tmp_path):
    log = tmp_path / "runs.log"
    fix = script(tmp_path, "fix.sh", APPENDS + 'echo "restarted checkout"\n')
    agent, input = command_agent(http, engine, fix, tmp_path), agent_input("fix", {"argv": [fix, str(log)]})
    first = await agent.run(input)
    again = await agent.run(input)  # Temporal's retry of the same attempt (a lost completion, a reset)
    assert len(lines(log)) == 1
    assert first.ok and first.summary.startswith(f"ran {fix} {log}: exit 0 in ")
    (row,) = recorded(engine, "fix")
    assert (row.attempt_key, row.agent, row.exit_code, row.ok) == ("1", "remediate_command", 0, True)
    assert row.finished_at is not None and row.summary == first.summary and row.action == f"{fix} {log}"
    when = row.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert again.ok and again.summary.startswith(f"ran once already, at {when} (finished ")
    assert again.summary.endswith(f"; not run again: {first.summary}")
    assert again.data["exit_code"] == 0 and again.data["stdout"] == first.data["stdout"]
    assert again.data["ran_before"]["started_at"] == row.started_at.isoformat()
    (message,) = again.messages
    assert message["content"].startswith(f"{fix} {log}: ran once already, at {when}")

    retried = await agent.run(agent_input("fix", {"argv": [fix, str(log)]}, run=2))  # a person's retry_step
    assert retried.ok and not retried.summary.startswith("ran once already") and len(lines(log)) == 2


async def test_an_intent_without_an_outcome_refuses_to_run_and_fails_for_a_person(http, engine, tmp_path):
    log = tmp_path / "runs.log"
    fix = script(tmp_path, "fix.sh", APPENDS)
    started = datetime(2026, 12, 8, 9, 30, 5, tzinfo=UTC)
    with Session(engine) as session:  # what a worker killed mid-command leaves behind
        session.add(RemediationRun(workflow_id="incident-7", step_id="fix", attempt_key="1",
                                   agent="remediate_command", action=f"{fix} {log}", worker="4242@lost-host",
                                   activity_attempt=1, started_at=started))  # fmt: skip
        session.commit()
    with pytest.raises(ApplicationError) as refused:
        await command_agent(http, engine, fix, tmp_path).run(agent_input("fix", {"argv": [fix, str(log)]}))
    assert refused.value.non_retryable and refused.value.type == OUTCOME_UNKNOWN
    assert refused.value.message.startswith(
        "outcome unknown: the command may have run (started at 2026-12-08 09:30:05 UTC on 4242@lost-host, "
        "which recorded no outcome: it may still be running, or its worker was lost); not run again."
    )
    assert lines(log) == []


async def test_concurrent_duplicates_run_the_command_once(http, engine, tmp_path):
    log = tmp_path / "runs.log"
    fix = script(tmp_path, "fix.sh", APPENDS + "sleep 1\n")
    input = agent_input("fix", {"argv": [fix, str(log)]})
    # Five workers' agents at once (a zombie attempt and its retries): the unique key lets one insert.
    agents = [command_agent(http, engine, fix, tmp_path) for _ in range(5)]
    outcomes = await asyncio.gather(*(agent.run(input) for agent in agents), return_exceptions=True)
    assert len(lines(log)) == 1
    results = [o for o in outcomes if not isinstance(o, BaseException)]
    refusals = [o for o in outcomes if isinstance(o, ApplicationError) and o.type == OUTCOME_UNKNOWN]
    assert len(results) == 1 and results[0].ok and len(refusals) == 4, outcomes
    (row,) = recorded(engine, "fix")
    assert row.exit_code == 0 and row.finished_at is not None


async def test_a_webhook_answered_2xx_is_not_sent_again(http, engine):
    with receiver() as (url, state):
        agent, input = webhook_agent(http, engine), agent_input("rollback", {"url": url, "payload": PAYLOAD})
        first = await agent.run(input)
        again = await agent.run(input)
        assert len(state.requests) == 1
    assert first.ok and again.ok and again.data["status"] == 200
    assert again.summary.startswith("was sent once already, at ") and again.summary.endswith(first.summary)
    (row,) = recorded(engine, "rollback")
    assert (row.http_status, row.sends, row.ok) == (200, 1, True)


async def test_a_webhook_left_open_is_resent_under_the_same_id_and_a_refusal_is_final(http, engine):
    with receiver() as (url, state):
        state.script = [503]
        agent, input = webhook_agent(http, engine), agent_input("rollback", {"url": url, "payload": PAYLOAD})
        with pytest.raises(ApplicationError) as unavailable:
            await agent.run(input)
        assert not unavailable.value.non_retryable
        (open_row,) = recorded(engine, "rollback")
        assert open_row.finished_at is None and "answered HTTP 503" in (open_row.error or "")
        assert (await agent.run(input)).ok  # Temporal's retry: the same webhook-id, which the receiver dedupes
        assert (await agent.run(input)).summary.startswith("was sent once already")  # answered: never again
        ids = [r["headers"]["webhook-id"] for r in state.requests]
        assert ids == ["incident-7:rollback:1", "incident-7:rollback:1"]

        state.status = 409
        refused_input = agent_input("rollback", {"url": url, "payload": PAYLOAD}, run=2)
        for _ in range(2):
            with pytest.raises(ApplicationError) as refused:
                await agent.run(refused_input)
            assert refused.value.non_retryable
        assert len(state.requests) == 3  # the refusal is recorded: a repeat raises it without sending
    assert refused.value.message.startswith("the request was sent once already, at ")
    assert "answered HTTP 409 (not retried)" in refused.value.message
    rows = {r.attempt_key: r for r in recorded(engine, "rollback")}
    assert (rows["1"].sends, rows["1"].http_status, rows["2"].sends, rows["2"].ok) == (2, 200, 1, False)


async def test_a_worker_killed_mid_command_leaves_it_run_once_and_the_step_failed(
    api, temporal_client, engine, settings, tmp_path, monkeypatch
):
    log = tmp_path / "runs.log"
    fix = script(tmp_path, "restart.sh", APPENDS + "sleep 20\n")
    entry = {"argv": [fix, f"{{path:{tmp_path}}}"]}
    settings.command_allowlist = [CommandRule(**entry)]
    monkeypatch.setenv("COMMAND_ALLOWLIST", json.dumps([entry]))  # the worker processes' setting
    restart = step("restart", "remediate_command", params={"argv": [fix, str(log)], "timeout_seconds": 25},
                   timeout_seconds=40, heartbeat_seconds=3)  # fmt: skip
    first, second = start_worker(settings), None
    try:
        incident = await run_playbook(api, [restart])
        approval = await pending_approval(api, incident["id"])
        decided = await api.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        await wait_until(lambda: lines(log) != [], timeout=60, what="the command to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = start_worker(settings)
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        for line in lines(log):  # the orphaned commands (their own process groups) outlive the worker
            try:
                os.killpg(int(line.split()[1]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert len(lines(log)) == 1
    assert outcome == "failed"
    (stepped,) = state.steps
    assert stepped.status == "failed"
    assert stepped.error is not None and "outcome unknown: the command may have run (started at " in stepped.error
    (row,) = recorded(engine, "restart")
    assert row.finished_at is None and row.activity_attempt == 1


async def test_a_flapping_incident_is_remediated_at_most_budget_times_then_a_person_decides(http, engine, tmp_path):
    """Issue 19, finding 2: a service flapping for two minutes was restarted six times. Each reopen is a new run
    (`incident-N-run2`…) whose first run of the step is automatic; a person's retry is not counted."""
    fix = script(tmp_path, "fix.sh", APPENDS)
    log = tmp_path / "runs.log"
    agent = command_agent(http, engine, str(fix), tmp_path, budget=2)
    incident_id = 70_000 + os.getpid() % 10_000
    incident = IncidentContext(incident_id=incident_id, title="flapping", service="cart", severity="P2")

    def run_of(workflow_id: str, run: int = 1) -> AgentInput:
        return AgentInput(incident=incident, workflow_id=workflow_id, step_id="restart", run=run,
                          params={"argv": [str(fix), str(log)]})  # fmt: skip

    base = f"incident-{incident_id}"
    assert (await agent.run(run_of(base))).ok
    assert (await agent.run(run_of(f"{base}-run2"))).ok
    with pytest.raises(ApplicationError) as refused:
        await agent.run(run_of(f"{base}-run3"))
    assert refused.value.type == "RemediationBudget" and refused.value.non_retryable
    assert refused.value.message.startswith(
        f"remediation budget spent: 2 automatic remediations of incident {incident_id}"
    )
    assert len(lines(log)) == 2
    assert (await agent.run(run_of(f"{base}-run3", run=2))).ok  # a person's retry_step: their decision
    assert len(lines(log)) == 3


async def test_a_spent_budget_rejects_the_approval_request_at_once_instead_of_asking(http, engine, tmp_path):
    """Issue 19: with the budget spent, the approver was still asked to approve a restart that would then refuse to
    run. The request is rejected at once by the budget (recorded, audited, the reason in its comment); a person's
    retry (run 2) and an agent the budget does not count are asked as before."""
    fix = script(tmp_path, "fix.sh", APPENDS)
    settings = Settings(remediation_budget=1)
    agent = command_agent(http, engine, str(fix), tmp_path, budget=1)
    with Session(engine) as session:  # approvals belong to a recorded incident
        row = Incident(title="flapping", service="cart", severity="P2")
        session.add(row)
        session.commit()
        assert row.id is not None
        incident_id = row.id
    incident = IncidentContext(incident_id=incident_id, title="flapping", service="cart", severity="P2")
    base = f"incident-{incident_id}"
    params = {"argv": [str(fix), str(tmp_path / "runs.log")]}
    ran = AgentInput(incident=incident, workflow_id=base, step_id="restart", run=1, params=params)
    assert (await agent.run(ran)).ok  # the one automatic remediation the budget allows

    approvals = ApprovalActivities(engine, ["slack"], settings)

    def request(run: int, agent: str = "remediate_command", workflow_id: str = f"{base}-run2") -> ApprovalTicket:
        return approvals.request_approval(
            ApprovalRequest(
                workflow_id=workflow_id, incident_id=incident_id, step_id="restart", run=run, agent=agent,
                action="restart cart", params=params, context_summary="", risk="high", impact="",
                expires_at=datetime.now(UTC).isoformat(), incident_type="default", service="cart",
            )
        )  # fmt: skip

    refused = request(1)
    assert refused.status == "rejected" and refused.channels == []  # nobody is notified: nothing to decide
    assert refused.decided_by == "policy:remediation-budget"
    assert refused.comment is not None and refused.comment.startswith(
        f"remediation budget spent: 1 automatic remediations of incident {incident_id} in the last 3600s"
    )
    assert request(1) == refused  # a retried activity finds the same decision
    with Session(engine) as session:
        row = session.get(Approval, refused.approval_id)
        assert row is not None and (row.status, row.channel) == ("rejected", "policy")
        kinds = session.exec(select(ApprovalEvent.kind).where(ApprovalEvent.approval_id == refused.approval_id))
        assert sorted(kinds) == ["auto_rejected", "requested"]
    assert request(2).status == "pending"  # a person's retry_step: their decision, asked as always
    assert request(1, agent="investigate_logs", workflow_id=f"{base}-run3").status == "pending"
