"""agent_runs: one row per agent activity attempt — what ran, on which worker, how it ended — and the
agent's step in the projection (`workflow_steps` + its event), written in the same transactions.

Written outside the agent's own code, so every agent is counted the same way; the dashboard's
"running agents" and the tests' "ran exactly once" both read it. Writing the step here, rather than from
the workflow, keeps the workflow's task from waiting on a database write at every step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from temporalio import activity

from activities.projection import STEP_WRITE_CTES, STEP_WRITE_NOTIFY, step_params
from core.payloads import SEQ_BLOCK, AgentInput, AgentResult, RecordStepInput, StepRecord, StepState
from core.tables import utcnow

WORKER = f"{socket.gethostname()}"[:200]
R = TypeVar("R")


# Built once: these run twice for every agent attempt. Each is one statement in autocommit: atomic, and one
# round trip (no BEGIN/COMMIT); with a step to record, the step write joins the same statement.
_RUN_STARTED_CTE = (
    "run AS (INSERT INTO agent_runs (activity_key, workflow_id, step_id, agent, attempt, worker, status, started_at) "
    "VALUES (:run_key, :run_workflow_id, :run_step_id, :run_agent, :run_attempt, :run_worker, 'running', :run_now) "
    "ON CONFLICT ON CONSTRAINT uq_agent_runs_activity_key DO NOTHING)"
)
_RUN_FINISHED_CTE = (
    "run AS (UPDATE agent_runs SET status = :run_status, error = :run_error, finished_at = :run_now "
    "WHERE activity_key = :run_key)"
)
_RUN_STARTED = text(f"WITH {_RUN_STARTED_CTE} SELECT 1")
_RUN_FINISHED = text(f"WITH {_RUN_FINISHED_CTE} SELECT 1")
_RUN_STARTED_WITH_STEP = text(f"WITH {_RUN_STARTED_CTE}, {STEP_WRITE_CTES} {STEP_WRITE_NOTIFY}")
_RUN_FINISHED_WITH_STEP = text(f"WITH {_RUN_FINISHED_CTE}, {STEP_WRITE_CTES} {STEP_WRITE_NOTIFY}")


class AgentRunLog:
    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine

    def _write(self, plain: Any, with_step: Any, params: dict[str, Any], step: RecordStepInput | None) -> None:
        assert self._engine is not None
        with self._engine.connect() as db:
            db = db.execution_options(isolation_level="AUTOCOMMIT")
            if step is None:
                db.execute(plain, params)
            else:
                db.execute(with_step, {**step_params(step), **params}).all()

    def _start(self, key: str, workflow_id: str, step_id: str, agent: str, attempt: int, input: Any) -> None:
        step = None
        if isinstance(input, AgentInput) and input.record is not None:
            shown = dataclasses.asdict(input)
            shown.pop("record")
            step = _snapshot(input, input.record, attempt, "running", None, shown)
        params = {
            "run_key": key,
            "run_workflow_id": workflow_id,
            "run_step_id": step_id,
            "run_agent": agent,
            "run_attempt": attempt,
            "run_worker": WORKER,
            "run_now": utcnow(),
        }
        self._write(_RUN_STARTED, _RUN_STARTED_WITH_STEP, params, step)

    def _finish(self, key: str, status: str, error: str | None, input: Any = None, result: Any = None) -> None:
        step = None
        if isinstance(input, AgentInput) and input.record is not None and isinstance(result, AgentResult):
            step = _snapshot(input, input.record, activity.info().attempt, "", result, None)
        params = {"run_key": key, "run_status": status, "run_error": (error or "")[:2000] or None, "run_now": utcnow()}
        self._write(_RUN_FINISHED, _RUN_FINISHED_WITH_STEP, params, step)

    async def around(self, agent: str, input: Any, call: Callable[[], Awaitable[R]]) -> R:
        if self._engine is None:
            return await call()
        info = activity.info()
        key = f"{info.workflow_run_id}/{info.activity_id}/{info.attempt}"
        await asyncio.to_thread(self._start, key, info.workflow_id or "", input.step_id, agent, info.attempt, input)
        try:
            result = await call()
        except BaseException as err:  # also cancellation: the row must not stay "running"
            await asyncio.shield(asyncio.to_thread(self._finish, key, "failed", f"{type(err).__name__}: {err}"))
            raise
        if isinstance(input, AgentInput) and input.record is not None and input.record.checks > 1:
            # The same marker the workflow adds, so the stored output and the workflow's state agree.
            result.data["checks"] = {"done": input.record.check, "allowed": input.record.checks}  # type: ignore[attr-defined]
        await asyncio.to_thread(self._finish, key, "succeeded", None, input, result)
        return result


def _snapshot(
    input: AgentInput, record: StepRecord, attempt: int, status: str, result: AgentResult | None, shown: Any
) -> RecordStepInput:
    """The step as the workflow will hold it: running while an attempt runs; when the agent returns, its
    output and — on the last check — completed, or failed for a negative finding the step fails on."""
    bounded = min(attempt, SEQ_BLOCK // 2 - 1)
    step = StepState(
        step_id=input.step_id,
        agent=record.agent,
        position=record.position,
        status=status or "running",
        attempt=attempt,
        runs=record.runs,
        started_at=record.started_at,
        params=input.params,
    )
    seq = record.seq_base + 2 * bounded
    if result is not None:
        seq += 1
        step.output = dataclasses.asdict(result)
        step.attempt = int(result.data.get("attempt", attempt))
        if result.ok or record.check >= record.checks:
            step.finished_at = datetime.now(UTC).isoformat()
            if result.ok or not record.fail_on_negative:
                step.status = "completed"
            else:
                step.status, step.error = "failed", result.summary
    return RecordStepInput(
        workflow_id=input.workflow_id, step=step, seq=seq, input=shown, incident_id=record.incident_id
    )


def recorded(name: str) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Decorate an agent method (on a class with `self.runs: AgentRunLog`) so each attempt is logged."""

    def decorate(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(method)
        async def wrapper(self: Any, input: Any) -> R:
            return await self.runs.around(name, input, lambda: method(self, input))

        return wrapper

    return decorate
