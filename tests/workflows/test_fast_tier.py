"""The fast tier: IncidentWorkflow's own logic on the time-skipping server with stub activities (tests/workflows/
stubs.py): no Postgres, no real agents, seconds for the whole file. `pytest -m "not slow"` runs it in the quick
loop; the same behaviours run end to end on real parts in the slow tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from core.converter import DATA_CONVERTER
from core.payloads import AddStepInput, DecideApprovalInput, RetryStepInput, UpdateStepParamsInput, WorkflowState
from tests.conftest import BIN
from tests.workflows.stubs import fast_worker, start


@pytest.fixture
async def clock() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own: the days these tests skip must not move the session's clock,
    which other tests compare with the wall clock."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    )
    yield env
    await env.shutdown()


def step(step_id: str, agent: str = "noop", *deps: str, **extra):
    return {"id": step_id, "agent": agent, "depends_on": list(deps), **extra}


async def finish(handle) -> tuple[str, WorkflowState]:
    try:
        await handle.result()
        outcome = "completed"
    except WorkflowFailureError:
        outcome = "failed"
    return outcome, await handle.query("status", result_type=WorkflowState)


async def refused(handle, update: str, arg) -> str:
    """Why the workflow's validator refused the update."""
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(update, arg)
    return str(err.value.cause)


def statuses(state: WorkflowState) -> dict[str, str]:
    return {s.step_id: s.status for s in state.steps}


async def test_branches_fan_out_and_join(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [
            step("monitor"), step("logs", "noop", "monitor"), step("metrics", "noop", "monitor"),
            step("join", "noop", "logs", "metrics"),
        ])  # fmt: skip
        outcome, state = await finish(handle)
    assert outcome == "completed" and set(statuses(state).values()) == {"completed"}
    order = [step_id for step_id, _ in stubs.ran]
    assert order[0] == "monitor" and order[-1] == "join" and set(order[1:3]) == {"logs", "metrics"}


async def test_a_failed_step_skips_its_dependents_and_fails_the_run(clock):
    async with fast_worker(clock.client) as (queue, _):
        handle = await start(clock.client, queue, [step("a", "fail"), step("b", "noop", "a")])
        outcome, state = await finish(handle)
    assert outcome == "failed" and statuses(state) == {"a": "failed", "b": "skipped"}


async def test_a_retry_with_new_params_after_a_day_of_waiting(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(
            clock.client, queue, [step("check", "noop", params={"ok": False}, fail_on_negative=True)],
            retry_window_seconds=2 * 86_400,
        )  # fmt: skip
        while (await handle.query("status", result_type=WorkflowState)).status != "failed":
            await clock.sleep(timedelta(hours=1))
        await clock.sleep(timedelta(days=1))  # the retry window is durable: still waiting
        await handle.execute_update("retry_step", RetryStepInput(step_id="check", params={"ok": True}, actor="ann"))
        outcome, state = await finish(handle)
    assert outcome == "completed" and [params for _, params in stubs.ran] == [{"ok": False}, {"ok": True}]
    assert state.changes[-1]["kind"] == "retry_step"


async def test_an_unanswered_approval_expires_and_the_run_waits_for_a_person(clock):
    """Issue 19, finding 1: an expired (or rejected) approval skipped the fix and its verification, and the run
    completed, which resolved an incident whose fix never ran. Now the step fails and the run waits."""
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [
            step("fix", "fix", risk="high", approval_timeout_seconds=3600), step("verify", "noop", "fix"),
        ], retry_window_seconds=86_400)  # fmt: skip
        state = await handle.query("status", result_type=WorkflowState)
        while state.status != "failed":  # the hour passes in skipped time
            await clock.sleep(timedelta(minutes=10))
            state = await handle.query("status", result_type=WorkflowState)
        assert statuses(state) == {"fix": "failed", "verify": "pending"} and stubs.ran == []
        assert state.steps[0].error == f"not run: approval expired at {state.steps[0].approval.expires_at}"
        assert state.error == "step fix failed; waiting for retry_step or abort"

        await handle.execute_update("retry_step", RetryStepInput(step_id="fix", actor="ann"))  # asks again
        while len(stubs.requests) < 2:
            await clock.sleep(timedelta(seconds=1))
        decision = DecideApprovalInput(decision="approve", step_id="fix", actor="bob", actor_role="approver")
        await handle.execute_update("decide_approval", decision)
        outcome, state = await finish(handle)
    assert outcome == "completed" and statuses(state) == {"fix": "completed", "verify": "completed"}
    assert [d.status for d in stubs.decisions] == ["expired", "approved"]


async def test_a_run_started_before_the_rule_still_skips_an_unapproved_step(clock):
    """Replay safety: runs without `unapproved_fails` keep the old outcome."""
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [
            step("fix", "fix", risk="high", approval_timeout_seconds=3600), step("verify", "noop", "fix"),
        ], unapproved_fails=False)  # fmt: skip
        outcome, state = await finish(handle)
    assert outcome == "completed" and statuses(state) == {"fix": "skipped", "verify": "skipped"}
    assert stubs.ran == []


async def test_an_approved_step_runs_with_the_approvers_edits(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [step("fix", "fix", risk="high", params={"n": 1})])
        while not stubs.requests:
            await clock.sleep(timedelta(seconds=1))
        decision = DecideApprovalInput(decision="approve", step_id="fix", params={"n": 2}, actor="ann",
                                       actor_role="approver")  # fmt: skip
        await handle.execute_update("decide_approval", decision)
        outcome, state = await finish(handle)
    assert outcome == "completed" and stubs.ran == [("fix", {"n": 2})]
    assert state.steps[0].approval.decided_by == "ann"


async def test_run_time_changes_cannot_lower_risk_nor_approve_themselves(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [
            step("hold", "noop", params={"summary": "hold"}, requires_approval=True),
            step("planned", "fix", "hold", risk="high", params={"n": 1}),
        ])  # fmt: skip
        lower = AddStepInput(step=step("extra", "fix", "hold", risk="low"))
        assert "risk low is below agent fix's risk high" in await refused(handle, "add_step", lower)
        await handle.execute_update("add_step", AddStepInput(step=step("extra", "fix", "hold"), actor="bob"))
        await handle.execute_update(
            "update_step_params", UpdateStepParamsInput(step_id="planned", params={"n": 5}, actor="bob")
        )
        await handle.execute_update(
            "decide_approval",
            DecideApprovalInput(decision="approve", step_id="hold", actor="ann", actor_role="approver"),
        )
        while len(stubs.requests) < 3:
            await clock.sleep(timedelta(seconds=1))
        changed = {r.step_id: r.changed_by for r in stubs.requests}
        assert changed == {"hold": None, "planned": "bob", "extra": "bob"}
        for step_id in ("planned", "extra"):
            own = DecideApprovalInput(decision="approve", step_id=step_id, actor="bob", actor_role="approver")
            assert "someone else must" in await refused(handle, "decide_approval", own)
            other = DecideApprovalInput(decision="approve", step_id=step_id, actor="ann", actor_role="approver")
            await handle.execute_update("decide_approval", other)
        outcome, state = await finish(handle)
    assert outcome == "completed"
    assert sorted(stubs.ran) == [("extra", {}), ("hold", {"summary": "hold"}), ("planned", {"n": 5})]
    assert next(s for s in state.steps if s.step_id == "extra").approval.changed_by == "bob"


LEVELS = [
    {"after_seconds": 600, "severity": "P1"},
    {"after_seconds": 1800, "notify": ["slack"], "team": "sre"},
    {"after_seconds": 3600, "notify": ["email"]},
]


async def test_a_run_waiting_for_a_person_escalates_level_by_level_until_acknowledged(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [step("fix", "fail")], retry_window_seconds=86_400,
                             escalation=LEVELS)  # fmt: skip
        while len(stubs.escalations) < 2:
            await clock.sleep(timedelta(minutes=5))
        first, second = stubs.escalations
        assert (first.level, first.policy, second.level) == (1, LEVELS[0], 2)
        assert first.reason == "step fix failed; waiting for retry_step or abort"
        stubs.acknowledged = True  # a person has it: level 3 finds that and stops
        await clock.sleep(timedelta(hours=2))
        assert len(stubs.escalations) == 2
        state = await handle.query("status", result_type=WorkflowState)
        assert state.status == "failed"  # still waiting for the person's retry or abort
        await handle.terminate("test over")


async def test_a_retry_stops_the_escalation(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [step("check", "noop", params={"ok": False}, fail_on_negative=True)],
                             retry_window_seconds=86_400, escalation=LEVELS)  # fmt: skip
        while not stubs.escalations:
            await clock.sleep(timedelta(minutes=5))
        await handle.execute_update("retry_step", RetryStepInput(step_id="check", params={"ok": True}, actor="ann"))
        outcome, _ = await finish(handle)
        await clock.sleep(timedelta(hours=2))
    assert outcome == "completed" and [e.level for e in stubs.escalations] == [1]


@pytest.mark.parametrize(
    ("oks", "outcome", "summary"),
    [
        ([True, False, True, True], "completed", "check 4"),  # a pass between failures is not a recovery
        ([True, False, False, True], "failed", "check 4 (only 1 of 2 checks in a row passed)"),
    ],
)
async def test_verify_needs_its_passes_in_a_row(clock, oks, outcome, summary):
    """Issue 19: verify passed at its first healthy check, so a flapping service was "verified" between flaps."""
    async with fast_worker(clock.client) as (queue, stubs):
        handle = await start(clock.client, queue, [
            step("verify", "seq", params={"oks": oks}, fail_on_negative=True,
                 repeat={"count": 4, "interval_seconds": 5, "passes": 2}),
        ])  # fmt: skip
        result, state = await finish(handle)
    assert result == outcome and len(stubs.ran) == 4
    assert state.steps[0].output["summary"] == summary
