"""Side effects at most once per step attempt: the remediation agents' record in `remediation_runs`.

Temporal runs an activity at least once: a worker that dies while a command runs, or an attempt Temporal times
out, is attempted again. Before a remediation acts it writes its intent, keyed by the workflow, the step and the
attempt key — the step's run (and its check, in a step that repeats): what the workflow or a person decided,
never Temporal's own attempt number — and its outcome when it is done. A retry of the activity finds that row:
with an outcome it reports the outcome instead of acting again; without one (the first may still be running, or
its worker died mid-way) it refuses, and a person decides (retry_step runs the step anew, under a new key).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Engine, delete, func, or_, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import agent_result
from activities.heartbeat import attempt
from core.db import session_scope
from core.payloads import AgentInput, AgentResult, incident_workflow_id
from core.redact import redact_text
from core.settings import Settings
from core.tables import RemediationRun, utcnow

OUTCOME_UNKNOWN = "OutcomeUnknown"  # the error type of a retry that refuses to act again
BUDGET_LOCK = 0x7265_6D00_0000_0000  # advisory lock keys of the per-incident budget: this + the incident id
BUDGETED_AGENTS = frozenset({"remediate_command", "remediate_webhook"})  # the agents whose runs it counts
BUDGET_POLICY = "remediation-budget"  # who rejects an approval request when the budget is spent already


def attempt_key(input: AgentInput) -> str:
    """The same for every Temporal attempt of one run of the step; a new run (retry_step, a re-run after a
    rejection) or a repeated step's next check is a new one."""
    check = input.record.check if input.record is not None else 1
    return str(input.run) if check == 1 else f"{input.run}.{check}"


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Recorded:
    """What an earlier attempt of this step attempt wrote."""

    action: str
    worker: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    result: dict[str, Any] | None

    def unknown(self, what: str) -> ApplicationError:
        """No outcome: it may have acted. Not retried by Temporal; the step fails and a person decides."""
        return ApplicationError(
            f"outcome unknown: the {what} may have run (started at {_at(self.started_at)} on {self.worker}, "
            "which recorded no outcome: it may still be running, or its worker was lost); not run again. "
            "Check its effect, then retry the step to run it anew, or abort",
            type=OUTCOME_UNKNOWN,
            non_retryable=True,
        )

    def repeat(self, what: str, *, ran: str = "ran", run: str = "run") -> AgentResult:
        """The recorded outcome, reported as the earlier run's; raises for a recorded failure or no outcome."""
        if self.finished_at is None:
            raise self.unknown(what)
        when = f"at {_at(self.started_at)} (finished {_at(self.finished_at)})"
        if self.result is None:
            raise ApplicationError(
                f"the {what} {ran} once already, {when}, and failed: {self.error}; not {run} again",
                type="AlreadyRan",
                non_retryable=True,
            )
        first = self.result
        note = f"{ran} once already, {when}; not {run} again"
        data = {
            **first["data"],
            "attempt": attempt(),
            "ran_before": {"started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat()},
        }
        return agent_result(
            first["ok"],
            f"{note}: {first['summary']}",
            data=data,
            findings=first["findings"],
            resolved=first.get("resolved"),
            messages=[{"role": "tool", "content": f"{self.action}: {note}", "metadata": {"repeat": True}}],
        )


@dataclass(frozen=True)
class Budget:
    """At most `limit` automatic remediations of one incident (all its runs: `incident-5`, `incident-5-run2`…) in
    the window: a flapping service is not restarted for ever; a person decides after that."""

    incident_id: int
    workflow_id: str
    limit: int
    window_seconds: float

    def check(self, session: Session, intent: dict[str, Any]) -> None:
        """Raise when the budget is spent; counted under a lock per incident, so concurrent steps cannot both pass."""
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BUDGET_LOCK + self.incident_id})
        already = session.exec(
            select(RemediationRun.attempt_key).where(  # this very attempt (a retry) is not counted again
                RemediationRun.workflow_id == intent["workflow_id"],
                RemediationRun.step_id == intent["step_id"],
                RemediationRun.attempt_key == intent["attempt_key"],
            )
        ).first()
        if already is not None:
            return
        spent = self.spent(session)
        if spent is not None:
            raise ApplicationError(
                f"{spent}; not run. A person decides: retry the step to run it anyway, or abort",
                type="RemediationBudget",
                non_retryable=True,
            )

    def spent(self, session: Session) -> str | None:
        """Why no automatic remediation may run now (the budget is used up), or None while some is left."""
        since = utcnow() - timedelta(seconds=self.window_seconds)
        used = session.exec(
            select(func.count()).select_from(RemediationRun).where(
                or_(col(RemediationRun.workflow_id) == self.workflow_id,
                    col(RemediationRun.workflow_id).startswith(f"{self.workflow_id}-run")),
                col(RemediationRun.attempt_key).in_(["1"]) | col(RemediationRun.attempt_key).startswith("1."),
                col(RemediationRun.started_at) > since,
            )
        ).one()  # fmt: skip
        if used < self.limit:
            return None
        return (
            f"remediation budget spent: {used} automatic remediations of incident {self.incident_id} in the last "
            f"{self.window_seconds:g}s (REMEDIATION_BUDGET={self.limit})"
        )


def incident_budget(incident_id: int, run: int, settings: Settings | None) -> Budget | None:
    """The incident's budget a run of a remediation step counts against: only a step's first run is automatic (a
    person's retry_step is a new run, and a decision of its own); none when REMEDIATION_BUDGET is 0."""
    if settings is None or settings.remediation_budget == 0 or run > 1:
        return None
    return Budget(
        incident_id=incident_id,
        workflow_id=incident_workflow_id(incident_id, settings.workflow_id_prefix),
        limit=settings.remediation_budget,
        window_seconds=settings.remediation_budget_window_seconds,
    )


class RemediationLedger:
    """Reads and writes `remediation_runs` for one agent. Without an engine (an agent run outside a worker, as
    unit tests do) nothing is recorded; inside an activity it refuses to act without one."""

    def __init__(self, engine: Engine | None, agent: str, settings: Settings | None = None) -> None:
        self._engine = engine
        self._agent = agent
        self._settings = settings

    async def claim(self, input: AgentInput, action: str) -> Recorded | None:
        """Write the intent; None when this attempt wrote it (it may act), else what the earlier one wrote."""
        if self._engine is None:
            if activity.in_activity():
                raise ApplicationError(
                    f"{self._agent} records every run (remediation_runs) and has no database",
                    type="NotConfigured",
                    non_retryable=True,
                )
            return None
        intent = {
            **_key(input),
            "agent": self._agent,
            "action": redact_text(action),
            "worker": f"{os.getpid()}@{socket.gethostname()}",
            "activity_attempt": attempt(),
            "sends": 1,
            "started_at": utcnow(),
        }
        budget = incident_budget(input.incident.incident_id, input.run, self._settings)
        return await asyncio.to_thread(self._claim, self._engine, intent, budget)

    @staticmethod
    def _claim(engine: Engine, intent: dict[str, Any], budget: Budget | None) -> Recorded | None:
        with session_scope(engine) as session:
            if budget is not None:
                budget.check(session, intent)
            # Two attempts at once (a zombie and its retry): the unique key lets one insert; the other waits for
            # it to commit, inserts nothing and reads the winner's row.
            written = session.execute(
                insert(RemediationRun)
                .values(**intent)
                .on_conflict_do_nothing(constraint="uq_remediation_runs_attempt")
                .returning(col(RemediationRun.id))
            ).first()
            if written is not None:
                return None
            key = {name: intent[name] for name in ("workflow_id", "step_id", "attempt_key")}
            row = session.exec(select(RemediationRun).filter_by(**key)).one()
            return Recorded(row.action, row.worker, row.started_at, row.finished_at, row.error, row.result)

    async def finish(
        self,
        input: AgentInput,
        result: AgentResult | None = None,
        *,
        error: str | None = None,
        exit_code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        """The outcome: a result, or the failure that ended it (`error`)."""
        values: dict[str, Any] = {"finished_at": utcnow(), "exit_code": exit_code, "http_status": http_status}
        if result is not None:
            stored = msgspec.to_builtins(dataclasses.replace(result, messages=[]))
            values.update(ok=result.ok, summary=result.summary, result=stored)
        else:
            values.update(ok=False, error=redact_text(error or ""))
        await self._write(input, values)

    async def note_failure(self, input: AgentInput, error: str) -> None:
        """A failure that leaves the row open: the agent's retry may act again (a webhook, with the same id)."""
        await self._write(input, {"error": redact_text(error)})

    async def count_send(self, input: AgentInput) -> None:
        """One more send under the same key (a webhook after an answer that did not end it, or none)."""
        await self._write(input, {"sends": col(RemediationRun.sends) + 1})

    async def release(self, input: AgentInput) -> None:
        """Nothing was started after all (the command could not be spawned): a retry may act."""
        statement = delete(RemediationRun).filter_by(**_key(input)).where(col(RemediationRun.finished_at).is_(None))
        await self._run(statement)

    async def _write(self, input: AgentInput, values: dict[str, Any]) -> None:
        """Update the open row (never an outcome already written). Shielded: a cancellation that ends the
        attempt meanwhile does not keep it from being written."""
        statement = (
            update(RemediationRun)
            .filter_by(**_key(input))
            .where(col(RemediationRun.finished_at).is_(None))
            .values(**values)
        )
        await self._run(statement)

    async def _run(self, statement: Any) -> None:
        if self._engine is not None:
            await asyncio.shield(asyncio.to_thread(self._execute, self._engine, statement))

    @staticmethod
    def _execute(engine: Engine, statement: Any) -> None:
        with engine.begin() as conn:
            conn.execute(statement)


def _key(input: AgentInput) -> dict[str, str]:
    return {"workflow_id": input.workflow_id, "step_id": input.step_id, "attempt_key": attempt_key(input)}
