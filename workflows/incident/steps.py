"""Running one step of IncidentWorkflow: its approval first when it needs one, then its agent as an activity
(the playbook's timeouts and retry policy; `repeat` checks again until one is ok), and the step's outcome.

An attempt that failed because our own database was unavailable (INFRASTRUCTURE_UNAVAILABLE) is not the step's
failure: runs with `waits_for_infrastructure` run the agent again after a durable backoff, outside the step's
retry policy, until the database is back or the run's `infrastructure_wait_seconds` are spent."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import msgspec
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from core import dag
    from core.approval_rules import needs_approval
    from core.dry_run import DryRunActivityDefs
    from core.payloads import (
        INFRASTRUCTURE_UNAVAILABLE,
        WEBHOOK_AGENT_ACTIVITY,
        AgentInput,
        AgentResult,
        StepRecord,
        StepState,
    )
    from core.playbook import StepSpec
    from workflows.incident.approval_gate import ApprovalGate
    from workflows.incident.state import IncidentRun


# How long the run waits before running an agent again while our infrastructure is unavailable: 1 s, doubling.
INFRA_FIRST_WAIT = 1.0
INFRA_MAX_WAIT = 30.0


def _retry_policy(step: StepSpec, waits_for_infrastructure: bool) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=step.retry.initial_interval_seconds),
        backoff_coefficient=step.retry.backoff,
        maximum_interval=timedelta(seconds=step.retry.max_interval_seconds),
        maximum_attempts=step.retry.max_attempts,
        # Handed straight to the workflow, which waits for the infrastructure without spending these attempts.
        non_retryable_error_types=[INFRASTRUCTURE_UNAVAILABLE] if waits_for_infrastructure else None,
    )


class InfrastructureDown(Exception):
    """Our infrastructure stayed unavailable for all of the run's infrastructure_wait_seconds: the step fails."""


def _infrastructure(err: ActivityError) -> tuple[str, str, str | None] | None:
    """What is down, why, and the failed attempt's agent_runs key, when our infrastructure failed the attempt."""
    cause = err.cause
    if not (isinstance(cause, ApplicationError) and cause.type == INFRASTRUCTURE_UNAVAILABLE):
        return None
    details = [str(d) for d in cause.details]
    what = details[0] if details else "infrastructure"
    why = details[1] if len(details) > 1 else cause.message
    return what, why, details[2] if len(details) > 2 else None


class StepRunner:
    """Owned by the workflow: runs each started step as a task of its own, through the run's approval gate."""

    def __init__(self, run: IncidentRun, gate: ApprovalGate) -> None:
        self._run = run
        self._gate = gate

    async def run(self, spec: StepSpec) -> None:
        """One run of the step, to its end in the run's state: completed, failed, skipped or cancelled."""
        run = self._run
        step = run.step(spec.id)
        step.runs += 1
        step.output = step.error = step.note = step.approval = None
        if needs_approval(spec.requires_approval, spec.risk):
            try:
                if not await self._gate.passes(spec, step):
                    return
            except (asyncio.CancelledError, CancelledError):
                await run.settle(spec.id, "cancelled", note=step.note or "cancelled while waiting for approval")
                return
        started_at = run.now()
        step.status, step.started_at, step.finished_at = "running", started_at, None
        agent_input = self._agent_input(spec, step)
        run.note_running()
        try:
            await self._checks(spec, step, agent_input, started_at)
        except (asyncio.CancelledError, CancelledError):
            await run.settle(spec.id, "cancelled", note=step.note or "cancelled")
            return
        except InfrastructureDown as err:
            await run.settle(spec.id, "failed", error=f"{spec.agent}: {err}")
            return
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                await run.settle(spec.id, "cancelled", note=step.note or "cancelled")
                return
            reason = "timed out" if isinstance(err.cause, ActivityTimeout) else str(err.cause or err)
            await run.settle(spec.id, "failed", error=f"{spec.agent}: {reason}")
            return
        ok = bool(step.output and step.output["ok"])
        if ok or not spec.fail_on_negative:
            await run.settle(spec.id, "completed", recorded=True)
        else:
            summary = step.output["summary"] if step.output else "negative"
            await run.settle(spec.id, "failed", error=summary, recorded=True)

    async def _checks(self, spec: StepSpec, step: StepState, agent_input: AgentInput, started_at: str) -> None:
        """The agent once, or with `repeat` up to its count of checks, until `passes` in a row are ok (one, unless
        the playbook says more). Out of checks short of that, the outcome is negative."""
        checks = spec.repeat.count if spec.repeat else 1
        passes = spec.repeat.passes if spec.repeat else 1
        if self._run.dry_run_id is not None:  # one check says what the step sees; the report says how it repeats
            checks = passes = 1
        streak = 0
        for check in range(1, checks + 1):
            result = await self._agent(spec, step, agent_input, started_at, check, checks)
            if spec.repeat:
                result.data["checks"] = {"done": check, "allowed": checks}
            step.attempt = int(result.data.get("attempt", 1))
            if spec.repeat and isinstance(result.data.get("dry_run"), dict):
                result.data["dry_run"]["repeat"] = (
                    f"would check up to {spec.repeat.count} times, every {spec.repeat.interval_seconds:g} s, until "
                    f"{spec.repeat.passes} in a row pass; the dry run checked once"
                )
            step.output = msgspec.to_builtins(result)  # a copy, 20x faster than asdict
            streak = streak + 1 if result.ok else 0
            if streak >= passes:
                return
            if check == checks:
                if result.ok:  # ok at the end, but not `passes` times in a row: not verified
                    step.output["ok"] = False
                    step.output["summary"] += f" (only {streak} of {passes} checks in a row passed)"
                return
            await workflow.sleep(
                timedelta(seconds=spec.repeat.interval_seconds if spec.repeat else 0),
                summary=f"{spec.id}: check {check}/{checks} " + (
                    f"positive ({streak} of {passes} in a row)" if result.ok else "negative") + ", checking again",
            )  # fmt: skip

    async def _agent(
        self, spec: StepSpec, step: StepState, agent_input: AgentInput, started_at: str, check: int, checks: int
    ) -> AgentResult:
        """The agent's activity for one check; run again, while our infrastructure is unavailable, for as long as
        the run waits for it (see the module's docstring)."""
        run = self._run
        if run.dry_run_id is not None:
            return await self._simulated(spec, agent_input)
        waits = run.input.waits_for_infrastructure
        retries, note = 0, None
        since: datetime | None = None  # when our infrastructure first failed a try
        lost: list[str] = []  # those tries' agent_runs keys, closed by the next try
        while True:
            # The agent activity records its step (running, then its outcome) in the projection itself; each
            # execution with a block of sequence numbers above what the workflow wrote meanwhile (the note).
            record = agent_input.record = self._step_record(spec, step, started_at, check, checks)
            record.lost_runs = list(lost)
            try:
                # By name, the one call that is: the agent is data (the playbook's), each agent its own activity type.
                result: AgentResult = await workflow.execute_activity(
                    WEBHOOK_AGENT_ACTIVITY if spec.agent in run.input.webhook_agents else spec.agent,
                    agent_input,
                    result_type=AgentResult,
                    start_to_close_timeout=timedelta(seconds=spec.timeout_seconds),
                    heartbeat_timeout=timedelta(seconds=spec.heartbeat_seconds) if spec.heartbeat_seconds else None,
                    retry_policy=_retry_policy(spec, waits),
                    summary=f"{spec.id}: {spec.agent}",
                )
            except ActivityError as err:
                down = _infrastructure(err) if waits else None
                if down is None:
                    raise
                what, why, run_key = down
                if run_key:
                    lost.append(run_key)
                retries += 1
                since = since or workflow.now()
                waited, limit = (workflow.now() - since).total_seconds(), run.input.infrastructure_wait_seconds
                if waited >= limit:
                    raise InfrastructureDown(
                        f"{what} unavailable for {waited:.0f} s ({retries} tries, not counted against the step's "
                        f"attempts); gave up after infrastructure_wait_seconds={limit:g}: {why}"
                    ) from err
                delay = min(INFRA_FIRST_WAIT * 2 ** (retries - 1), INFRA_MAX_WAIT, limit - waited)
                step.note = note = f"waiting for {what}: {why} (retry {retries})"
                await run.projection.record_step(step)
                try:
                    await workflow.sleep(
                        max(delay, INFRA_FIRST_WAIT), summary=f"{spec.id}: waiting for {what} (retry {retries})"
                    )
                except (asyncio.CancelledError, CancelledError):
                    if step.note == note:  # an abort: the step is cancelled, not waiting any more
                        step.note = None
                    raise
                continue
            if record.opening is not None:  # that attempt wrote it, with its step
                run.projection.opening = None
            if note is not None and step.note == note:  # the step the agent recorded has no note: the state agrees
                step.note = None
            return result

    async def _simulated(self, spec: StepSpec, agent_input: AgentInput) -> AgentResult:
        """A dry run's step: `simulate_agent` runs the agent only if it declares that it only reads, and otherwise
        answers what it would do. Nothing is recorded but the dry run's own row (the workflow writes it)."""
        agent_input.record = None
        result: AgentResult = await workflow.execute_activity_method(
            DryRunActivityDefs.simulate_agent,
            agent_input,
            start_to_close_timeout=timedelta(seconds=spec.timeout_seconds),
            heartbeat_timeout=timedelta(seconds=spec.heartbeat_seconds) if spec.heartbeat_seconds else None,
            retry_policy=_retry_policy(spec, False),
            summary=f"{spec.id}: {spec.agent} (dry run)",
        )
        return result

    def _step_record(self, spec: StepSpec, step: StepState, started_at: str, check: int, checks: int) -> StepRecord:
        projection = self._run.projection
        return StepRecord(
            incident_id=self._run.state.incident_id,
            agent=spec.agent,
            position=step.position,
            runs=step.runs,
            started_at=started_at,
            seq_base=projection.reserve_seq(),
            fail_on_negative=spec.fail_on_negative,
            check=check,
            checks=checks,
            opening=projection.opening,
        )

    def _agent_input(self, spec: StepSpec, step: StepState) -> AgentInput:
        run = self._run
        outputs = {dep: msgspec.to_builtins(run.step(dep).output) for dep in spec.depends_on}  # copies
        previous = outputs[spec.depends_on[0]] if len(spec.depends_on) == 1 else (outputs or None)
        return AgentInput(
            incident=run.input.incident,
            workflow_id=run.state.workflow_id,
            step_id=spec.id,
            previous_agent_output=previous,
            dependency_outputs=outputs,
            params=run.render(step.params),
            instructions=run.render(spec.instructions),
            run=step.runs,
            context_budget_tokens=spec.context_budget_tokens,
            agent=spec.agent,
            visible_steps=dag.lineage(run.playbook, spec.id),
        )
