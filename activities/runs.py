"""agent_runs: one row per agent activity attempt — what ran, on which worker, how it ended — and the
agent's step in the projection (`workflow_steps` + its event), written in the same transactions.

Written outside the agent's own code, so every agent is counted the same way; the dashboard's
"running agents" and the tests' "ran exactly once" both read it. Writing the step here, rather than from
the workflow, keeps the workflow's task from waiting on a database write at every step.

Our database being unavailable (refused, lost, shut down, no pooled connection free) is not the agent's failure:
an attempt that meets it, here or in the agent, raises INFRASTRUCTURE_UNAVAILABLE, which runs started with
`waits_for_infrastructure` wait out (workflows/incident/steps.py) instead of spending the step's attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.conversation import (
    MESSAGE_EVENT_CTE,
    MESSAGES_CTE,
    SNAPSHOT_CTE,
    ConversationStore,
    Prepared,
    agent_messages,
    message_params,
)
from activities.heartbeat import heartbeating
from activities.projection import STEP_WRITE_CTES, open_workflow, step_params
from core.conversations import MESSAGES_CHANNEL
from core.db import autocommit_rows
from core.llm import LLM_THREADS
from core.metrics import observe_attempt
from core.payloads import (
    INFRASTRUCTURE_UNAVAILABLE,
    SEQ_BLOCK,
    AgentInput,
    AgentResult,
    RecordStepInput,
    RecordWorkflowInput,
    StepRecord,
    StepState,
)
from core.redact import redact_text
from core.tables import EVENTS_CHANNEL, utcnow

WORKER = f"{socket.gethostname()}"[:200]
R = TypeVar("R")


# A step that ends within this long is written once, started and ended together (both its events, one
# round trip); a longer one shows as running while it runs. No one watches a dashboard at a finer grain.
FAST_STEP_SECONDS = 0.2

# Built once: these run for every agent attempt. Each is one statement in autocommit: atomic, and one round
# trip (no BEGIN/COMMIT); with a step to record, the step write joins the same statement.
_RUN_STARTED_CTE = (
    "run AS (INSERT INTO agent_runs (activity_key, workflow_id, step_id, agent, attempt, worker, status, started_at) "
    "VALUES (:run_key, :run_workflow_id, :run_step_id, :run_agent, :run_attempt, :run_worker, 'running', :run_now) "
    "ON CONFLICT ON CONSTRAINT uq_agent_runs_activity_key DO NOTHING)"
)
_RUN_FINISHED_CTE = (
    "run AS (UPDATE agent_runs SET status = :run_status, error = :run_error, finished_at = :run_now "
    "WHERE activity_key = :run_key)"
)
_RUN_DONE_CTE = (  # started and finished in one write
    "run AS (INSERT INTO agent_runs (activity_key, workflow_id, step_id, agent, attempt, worker, status, error, "
    "started_at, finished_at) VALUES (:run_key, :run_workflow_id, :run_step_id, :run_agent, :run_attempt, "
    ":run_worker, :run_status, :run_error, :run_started, :run_now) "
    "ON CONFLICT ON CONSTRAINT uq_agent_runs_activity_key DO UPDATE SET "
    "status = EXCLUDED.status, error = EXCLUDED.error, finished_at = EXCLUDED.finished_at)"
)


# Attempts of the step whose end an outage kept from being written (StepRecord.lost_runs): failed, not running.
_CLOSE_LOST = text(
    "UPDATE agent_runs SET status = 'failed', error = :error, finished_at = :now "
    "WHERE activity_key = ANY(:keys) AND status = 'running'"
)
LOST_ERROR = "InfrastructureUnavailable: the database was unavailable; this attempt's end could not be recorded"

# SQLSTATE classes of a database that is not there or cannot take us now: connection exceptions, insufficient
# resources (too many connections, no memory or disk), shutdown, crash or start-up. Others (a deadlock, a cancelled
# statement, a constraint) are the agent's ordinary failures, retried under the step's policy as before.
DOWN_SQLSTATES = ("08", "53", "57P")


def database_down(err: BaseException) -> str | None:
    """Why our database is unavailable, when `err` (or an error it was raised from) says so; None otherwise."""
    current: BaseException | None = err
    for _ in range(5):  # a chain of `raise … from`, bounded
        if current is None:
            return None
        if isinstance(current, ApplicationError) and current.type == INFRASTRUCTURE_UNAVAILABLE:
            return str(current.details[1]) if len(current.details) > 1 else current.message
        if isinstance(current, PoolTimeout):
            return "no database connection was free in time"
        if isinstance(current, DisconnectionError):
            return _first_line(current)
        orig = current.orig if isinstance(current, DBAPIError) else current
        if isinstance(orig, psycopg.OperationalError):
            if not orig.sqlstate or orig.sqlstate.startswith(DOWN_SQLSTATES):
                return _first_line(orig)
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return _first_line(orig or current)
        current = current.__cause__
    return None


def unavailable(err: BaseException, run_key: str) -> ApplicationError | None:
    """The attempt's failure as INFRASTRUCTURE_UNAVAILABLE when our database is why (None: it is not). Retryable for
    runs started before waits_for_infrastructure (their retry policy spends the step's attempts on it, as before);
    the others' policy hands it straight to the workflow, which waits."""
    why = database_down(err)
    if why is None:
        return None
    return ApplicationError(f"Postgres unavailable: {why}", "Postgres", why, run_key, type=INFRASTRUCTURE_UNAVAILABLE)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return redact_text(lines[0] if lines else type(err).__name__, 300)


@functools.cache
def _statement(run_cte: str, *, step: bool, snapshot: bool, messages: bool) -> Any:
    """The attempt's write as one statement: its run row, and as the case may be its step, its context
    snapshot and its conversation messages, with every event NOTIFYed. Built once per shape."""
    ctes = [run_cte, *([SNAPSHOT_CTE] if snapshot else []), *([MESSAGES_CTE] if messages else [])]
    if step:
        ctes.append(STEP_WRITE_CTES)
    elif messages:  # no step event to announce them (a failed attempt): one of their own
        ctes.append(MESSAGE_EVENT_CTE)
    # Only constants of this module are joined here, never input.
    events = "event" if step else "msg_event" if messages else None
    notices = [f"SELECT pg_notify(:channel, CAST(id AS text)) FROM {events}"] if events else []  # noqa: S608
    if messages:  # wake the embedding indexer once per statement
        notices.append(f"SELECT pg_notify('{MESSAGES_CHANNEL}', '') FROM (SELECT 1 FROM msgs LIMIT 1) AS w")  # noqa: S608
    if not notices:
        return text(f"WITH {', '.join(ctes)} SELECT 1")
    tail = " UNION ALL ".join(notices)
    return text(f"WITH {', '.join(ctes)} {tail}")


class AgentRunLog:
    def __init__(self, engine: Engine | None, conversation: ConversationStore | None = None) -> None:
        self._engine = engine
        self._conversation = conversation

    def _write(self, run_cte: str, params: dict[str, Any], step: RecordStepInput | None, started_too: bool) -> None:
        assert self._engine is not None
        statement = _statement(
            run_cte, step=step is not None, snapshot="snap_key" in params, messages="msg_rows" in params
        )
        if step is not None:
            params = {**step_params(step, started_too=started_too), **params}
        autocommit_rows(self._engine, statement, {"channel": EVENTS_CHANNEL, **params})

    def _close_lost(self, keys: list[str]) -> None:
        assert self._engine is not None
        autocommit_rows(self._engine, _CLOSE_LOST, {"keys": keys, "now": utcnow(), "error": LOST_ERROR})

    def _open(self, opening: RecordWorkflowInput) -> None:
        """The workflow's first row (in_progress; its incident too), which the step rows refer to: written
        first, so the incident shows someone on it while the agent works. Idempotent (its seq)."""
        assert self._engine is not None
        open_workflow(self._engine, opening)

    def _prepare(
        self, input: AgentInput, opening: RecordWorkflowInput | None, attempt: int, run_key: str, agent: str
    ) -> Prepared:
        assert self._conversation is not None
        if opening is not None:
            self._open(opening)
        return self._conversation.prepare(input, attempt=attempt, run_key=run_key, agent=agent)

    def _start(self, run: dict[str, Any], started: datetime, input: Any, prepared: Prepared | None) -> None:
        step = None
        if isinstance(input, AgentInput) and input.record is not None:
            step = _snapshot(input, input.record, run["run_attempt"], "running", None, _shown(input))
        snapshot = prepared.snapshot if prepared is not None else {}
        self._write(_RUN_STARTED_CTE, {**run, **snapshot, "run_now": started}, step, False)

    def _finish(
        self,
        run: dict[str, Any],
        started: datetime | None,  # None: the start was written on its own
        status: str,
        error: str | None,
        input: Any = None,
        result: Any = None,
        prepared: Prepared | None = None,
        began: datetime | None = None,
    ) -> None:
        step = None
        if isinstance(input, AgentInput) and input.record is not None and isinstance(result, AgentResult):
            shown = _shown(input) if started is not None else None
            step = _snapshot(input, input.record, run["run_attempt"], "", result, shown)
        now = utcnow()
        # The incident page shows a failed attempt's error: an HTTP error or a command's message may quote a secret.
        run_error = redact_text(error or "", 2000) or None
        params = {**run, "run_status": status, "run_error": run_error, "run_now": now}
        if prepared is not None and isinstance(input, AgentInput):
            if started is not None:  # the snapshot was not written with the start
                params.update(prepared.snapshot)
            elapsed = int((now - (began or now)).total_seconds() * 1000)
            rows = agent_messages(
                input,
                run["run_agent"],
                run["run_key"],
                result=result if isinstance(result, AgentResult) else None,
                error=error,
                elapsed_ms=elapsed,
            )
            if rows:
                params.update(message_params(rows, now))
        if started is None:
            self._write(_RUN_FINISHED_CTE, params, step, False)
        else:
            self._write(_RUN_DONE_CTE, {**params, "run_started": started}, step, True)

    async def around(self, agent: str, input: Any, call: Callable[[], Awaitable[R]]) -> R:
        if self._engine is None:
            return await call()
        try:
            return await self._around(agent, input, call)
        except Exception as err:
            if isinstance(err, ApplicationError) and err.type == INFRASTRUCTURE_UNAVAILABLE:
                raise
            down = unavailable(err, _run_key())  # preparing the attempt: nothing ran yet
            if down is None:
                raise
            raise down from err

    async def _around(self, agent: str, input: Any, call: Callable[[], Awaitable[R]]) -> R:
        info = activity.info()
        run = {
            "run_key": _run_key(),
            "run_workflow_id": info.workflow_id or "",
            "run_step_id": input.step_id,
            "run_agent": agent,
            "run_attempt": info.attempt,
            "run_worker": WORKER,
        }
        prepared = await self._begin(agent, input, run)
        began = utcnow()
        started: datetime | None = began  # None once the start is written on its own
        work = asyncio.ensure_future(call())
        try:
            await asyncio.wait({work}, timeout=FAST_STEP_SECONDS)
            if not work.done():  # a slow step: show it running now
                started = await self._show_running(agent, run, began, input, prepared)
            result = await work
        except BaseException as err:  # also cancellation: the row must not stay "running"
            work.cancel()
            failure = await self._failed(agent, run, started, err, input, prepared, began)
            if failure is err:
                raise
            raise failure from err
        if isinstance(input, AgentInput) and input.record is not None and input.record.checks > 1:
            # The same marker the workflow adds, so the stored output and the workflow's state agree.
            result.data["checks"] = {"done": input.record.check, "allowed": input.record.checks}  # type: ignore[attr-defined]
        try:
            await asyncio.to_thread(self._finish, run, started, "succeeded", None, input, result, prepared, began)
        except Exception as unrecorded:
            # Not recorded, the result would be missing from the step and from the next agents' context: the
            # attempt runs again once the database is back (a remediation reports its recorded outcome then).
            down = unavailable(unrecorded, run["run_key"])
            if down is None:
                raise
            observe_attempt(agent, (utcnow() - began).total_seconds(), down)
            raise down from unrecorded
        observe_attempt(agent, (utcnow() - began).total_seconds(), None)
        if isinstance(result, AgentResult):
            result.messages = []  # stored: the workflow's history keeps only the result
        return result

    async def _begin(self, agent: str, input: Any, run: dict[str, Any]) -> Prepared | None:
        """Before the agent runs: earlier tries' rows an outage left open closed, the workflow's first row, the
        agent's context."""
        lost = input.record.lost_runs if isinstance(input, AgentInput) and input.record is not None else []
        if lost:
            await asyncio.to_thread(self._close_lost, lost)
        opening = _opening(input)
        if self._conversation is not None and isinstance(input, AgentInput):
            # An LLM summary can take a while: keep the step's heartbeat timeout from firing meanwhile.
            threads = LLM_THREADS.run if self._conversation.asks_a_model else asyncio.to_thread
            prepared = await heartbeating(
                threads(self._prepare, input, opening, run["run_attempt"], run["run_key"], agent),
                "preparing the context",
            )
            input.context = prepared.context
            return prepared
        if opening is not None:
            await asyncio.to_thread(self._open, opening)
        return None

    async def _show_running(
        self, agent: str, run: dict[str, Any], began: datetime, input: Any, prepared: Prepared | None
    ) -> datetime | None:
        """Write the attempt's start; None once written. Only the display: while the database is unavailable the
        agent goes on, and its end writes both."""
        try:
            await asyncio.to_thread(self._start, run, began, input, prepared)
        except Exception as err:
            if database_down(err) is None:
                raise
            activity.logger.warning("%s: could not record the attempt's start (%s)", agent, err)
            return began
        return None

    async def _failed(
        self,
        agent: str,
        run: dict[str, Any],
        started: datetime | None,
        err: BaseException,
        input: Any,
        prepared: Prepared | None,
        began: datetime,
    ) -> BaseException:
        """Record the failed attempt; what to raise: `err`, or INFRASTRUCTURE_UNAVAILABLE when our database is why
        it failed or why its end could not be recorded (a cancellation stays one)."""
        failure: BaseException = unavailable(err, run["run_key"]) or err
        error = "cancelled" if isinstance(err, asyncio.CancelledError) else f"{type(err).__name__}: {err}"
        try:
            await asyncio.shield(
                asyncio.to_thread(self._finish, run, started, "failed", error, input, None, prepared, began)
            )
        except Exception as unrecorded:
            down = unavailable(unrecorded, run["run_key"])
            if down is None:
                raise
            if not isinstance(err, asyncio.CancelledError):
                failure = down
        observe_attempt(agent, (utcnow() - began).total_seconds(), failure)
        return failure


def _run_key() -> str:
    """The attempt's key in agent_runs."""
    info = activity.info()
    return f"{info.workflow_run_id}/{info.activity_id}/{info.attempt}"


def _opening(input: Any) -> RecordWorkflowInput | None:
    return input.record.opening if isinstance(input, AgentInput) and input.record is not None else None


def _shown(input: AgentInput) -> dict[str, Any]:
    """The step's input as stored for the step page (without the workflow's bookkeeping)."""
    # Copied without the context (kept whole in context_snapshots) rather than copied whole and trimmed.
    shown: dict[str, Any] = msgspec.to_builtins(dataclasses.replace(input, record=None, context=None))
    shown.pop("record")
    shown.pop("context")
    return shown


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
        step.output = msgspec.to_builtins(result)
        step.attempt = int(result.data.get("attempt", attempt))
        if result.ok or record.check >= record.checks:
            step.finished_at = datetime.now(UTC).isoformat()
            if result.ok or not record.fail_on_negative:
                step.status = "completed"
            else:
                step.status, step.error = "failed", result.summary
    return RecordStepInput(
        workflow_id=input.workflow_id, step=step, seq=seq, input=shown, incident_id=record.incident_id, from_agent=True
    )


def recorded(name: str) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Decorate an agent method (on a class with `self.runs: AgentRunLog`) so each attempt is logged."""

    def decorate(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(method)
        async def wrapper(self: Any, input: Any) -> R:
            result: R = await self.runs.around(name, input, lambda: method(self, input))
            return result

        return wrapper

    return decorate
