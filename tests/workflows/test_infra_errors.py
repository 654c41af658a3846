"""Issue 20, finding 3, in the fast tier: an agent attempt that fails because our own database is unavailable
(INFRASTRUCTURE_UNAVAILABLE, activities/runs.py) is not the step's failure. The run waits it out with a durable
backoff, beyond the step's own attempts, says so in the step's note, and fails the step only after its
infrastructure_wait_seconds, with an error naming what was down. (On real parts: test_postgres_outage.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from core.converter import DATA_CONVERTER
from tests.conftest import BIN
from tests.workflows.stubs import fast_worker, start
from tests.workflows.test_fast_tier import finish, statuses

RETRY = {"max_attempts": 2, "initial_interval_seconds": 1, "backoff": 2, "max_interval_seconds": 1}


@pytest.fixture
async def clock() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    )
    yield env
    await env.shutdown()


def steps() -> list[dict]:
    return [
        {"id": "diagnose", "agent": "needs_db", "retry": RETRY},
        {"id": "after", "agent": "noop", "depends_on": ["diagnose"]},
    ]


async def timers(handle) -> list[float]:
    """The durable waits the run started, in seconds."""
    return [
        event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
        async for event in handle.fetch_history_events()
        if event.HasField("timer_started_event_attributes")
    ]


async def test_an_outage_is_waited_out_beyond_the_steps_attempts(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        stubs.down = 7  # the step allows 2 attempts
        handle = await start(clock.client, queue, steps(), waits_for_infrastructure=True)
        outcome, state = await finish(handle)
    assert outcome == "completed" and statuses(state) == {"diagnose": "completed", "after": "completed"}
    assert [step_id for step_id, _ in stubs.ran] == ["diagnose"] * 8 + ["after"]
    assert await timers(handle) == [1, 2, 4, 8, 16, 30, 30]  # 1 s doubling, at most 30 s
    # The page (the projection) showed why the step waited; once done, the note is gone.
    assert stubs.notes[0] == "waiting for Postgres: connection refused (retry 1)"
    assert stubs.notes[-1] == "waiting for Postgres: connection refused (retry 7)"
    assert state.steps[0].note is None and state.steps[0].error is None
    # Each try closes the agent_runs rows the earlier tries could not finish.
    assert stubs.lost[-1] == [f"try-{n}" for n in range(1, 8)]


async def test_after_the_wait_the_step_fails_naming_postgres(clock):
    async with fast_worker(clock.client) as (queue, stubs):
        stubs.down = 1_000
        handle = await start(
            clock.client, queue, steps(), waits_for_infrastructure=True, infrastructure_wait_seconds=120
        )
        outcome, state = await finish(handle)
    assert outcome == "failed" and statuses(state) == {"diagnose": "failed", "after": "skipped"}
    error = state.steps[0].error
    assert error.startswith("needs_db: Postgres unavailable for 12") and "gave up after" in error, error
    assert error.endswith("infrastructure_wait_seconds=120: connection refused"), error
    # 1+2+4+8+16+30+30, then what was left of the 120 s (the tries themselves take a little)
    assert sum(await timers(handle)) == pytest.approx(120, abs=1)
    assert state.error == "step diagnose failed; waiting for retry_step or abort"


async def test_a_run_started_before_the_flag_spends_the_steps_attempts_as_before(clock):
    """Replay safety: runs without waits_for_infrastructure keep the old outcome."""
    async with fast_worker(clock.client) as (queue, stubs):
        stubs.down = 7
        handle = await start(clock.client, queue, steps())
        outcome, state = await finish(handle)
    assert outcome == "failed" and len(stubs.ran) == 2  # max_attempts
    assert state.steps[0].error == "needs_db: InfrastructureUnavailable: Postgres unavailable: connection refused"
    assert not [note for note in stubs.notes if "waiting for" in note]
