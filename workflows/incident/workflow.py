"""IncidentWorkflow: one per incident. Interprets the pinned playbook's DAG, running agents as activities.

Named handlers for the Temporal UI and CLI: query `status`; updates `retry_step`, `abort`, `add_step`,
`remove_step`, `update_step_params`, `decide_approval` (each validated before it is written to history);
signals `abort_signal`, `decide_approval_signal`. The work is done by the collaborators it owns, over the run's
shared state (state.py): the step runner (steps.py), the approval gate (approval_gate.py) and the projection
writer (projection_writer.py).
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import asdict
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core import dag
    from core.approval_rules import decision_input_problem, decision_nul_problem
    from core.conditions import ConditionError, evaluate
    from core.payloads import (
        AbortInput,
        AddStepInput,
        DecideApprovalInput,
        IncidentWorkflowInput,
        RemoveStepInput,
        RetryStepInput,
        UpdateStepParamsInput,
        WorkflowState,
    )
    from core.playbook import StepSpec
    from workflows.changes import check_add, check_params, check_remove, check_retry, refuse_nul
    from workflows.incident.approval_gate import ApprovalGate
    from workflows.incident.escalation import escalate
    from workflows.incident.state import IncidentRun, new_step
    from workflows.incident.steps import StepRunner


# Unsandboxed: the sandbox re-imports and proxies modules for every run, which cost about a third of the
# throughput (bench/engine.py); this package imports only temporalio, the standard library and passed-through
# core modules, and the replay test over recorded histories catches non-determinism instead.
@workflow.defn(name="IncidentWorkflow", sandboxed=False)
class IncidentWorkflow:
    @workflow.init
    def __init__(self, input: IncidentWorkflowInput) -> None:
        self._own(IncidentRun(input))

    def _own(self, run: IncidentRun) -> None:
        """The run and the collaborators that work on it (a dry run owns the same ones over a simulated run)."""
        self._run = run
        self._state = self._run.state  # the same object, for ever: the `status` query's answer
        self._gate = ApprovalGate(self._run)
        self._steps = StepRunner(self._run, self._gate)
        self._halted = False
        self._retry: RetryStepInput | None = None
        self._abort: AbortInput | None = None

    # ---- queries and updates ----------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> WorkflowState:
        """Live state: workflow status, current step(s), per-step status, output, attempts."""
        return self._state

    @workflow.update(name="retry_step")
    def retry_step(self, input: RetryStepInput) -> WorkflowState:
        """Run the failed step (or every failed step) again, optionally with new params."""
        self._retry = input
        self._run.change(input.actor, "retry_step", input.step_id, {"params": input.params}, input.origin)
        return self._state

    @retry_step.validator
    def _validate_retry(self, input: RetryStepInput) -> None:
        refuse_nul(input)
        run = self._run
        check_retry(run.playbook, run.facts, input.step_id, input.params, self._halted and self._retry is None)

    @workflow.update(name="abort")
    def abort(self, input: AbortInput) -> WorkflowState:
        """Stop: cancel running steps, skip the rest, end as cancelled."""
        self._request_abort(input)
        return self._state

    @abort.validator
    def _validate_abort(self, input: AbortInput) -> None:
        refuse_nul(input)
        if self._abort is not None or self._state.status in ("completed", "cancelled"):
            raise ValueError(f"the workflow is already {self._state.status}")

    @workflow.signal(name="abort_signal")
    def abort_signal(self, input: AbortInput) -> None:
        """The same as the abort update, for tools that can only signal (repeats are ignored)."""
        if self._abort is None:
            self._request_abort(input)

    @workflow.update(name="add_step")
    def add_step(self, input: AddStepInput) -> WorkflowState:
        """Add a step to the DAG; it starts as soon as its dependencies allow."""
        run = self._run
        step = self._check_add(input)
        run.playbook = run.playbook.model_copy(update={"steps": [*run.playbook.steps, step]})
        run.facts[step.id] = dag.StepFacts()
        self._state.steps.append(new_step(step, len(self._state.steps)))
        run.change(input.actor, "add_step", step.id, {"step": step.model_dump(mode="json")}, input.origin)
        run.changed(step.id, input.actor)
        return self._state

    @add_step.validator
    def _validate_add(self, input: AddStepInput) -> None:
        refuse_nul(input)
        self._check_open()
        self._check_add(input)

    def _check_add(self, input: AddStepInput) -> StepSpec:
        run = self._run
        return check_add(run.playbook, run.facts, input.step, set(run.input.known_agents), run.input.agent_risks)

    @workflow.update(name="remove_step")
    def remove_step(self, input: RemoveStepInput) -> WorkflowState:
        """Remove a step that has not started."""
        run = self._run
        run.playbook = run.playbook.model_copy(
            update={"steps": [s for s in run.playbook.steps if s.id != input.step_id]}
        )
        del run.facts[input.step_id]
        self._state.steps = [s for s in self._state.steps if s.step_id != input.step_id]
        run.change(input.actor, "remove_step", input.step_id, {}, input.origin)
        return self._state

    @remove_step.validator
    def _validate_remove(self, input: RemoveStepInput) -> None:
        refuse_nul(input)
        self._check_open()
        check_remove(self._run.playbook, self._run.facts, input.step_id)

    @workflow.update(name="update_step_params")
    def update_step_params(self, input: UpdateStepParamsInput) -> WorkflowState:
        """Change the params of a step that has not started."""
        self._run.step(input.step_id).params = copy.deepcopy(input.params)
        self._run.change(input.actor, "update_step_params", input.step_id, {"params": input.params}, input.origin)
        self._run.changed(input.step_id, input.actor)
        return self._state

    @update_step_params.validator
    def _validate_params(self, input: UpdateStepParamsInput) -> None:
        refuse_nul(input)
        self._check_open()
        check_params(self._run.playbook, self._run.facts, input.step_id, input.params)

    @workflow.update(name="decide_approval")
    async def decide_approval(self, input: DecideApprovalInput) -> WorkflowState:
        """Approve (optionally with edited params) or reject a step's pending approval."""
        await self._gate.await_requests(input)
        problem = self._gate.decision_problem(input)
        if problem:  # only when the decision came while its request was being recorded (see the validator)
            raise ApplicationError(problem, type="DecisionRefused", non_retryable=True)
        self._gate.decide(input)
        return self._state

    @decide_approval.validator
    def _validate_decision(self, input: DecideApprovalInput) -> None:
        # Checks that came after decisions were first written to histories run here only (a validator does
        # not run on replay), so a decision an older version took is taken again on replay.
        problem = decision_input_problem(input) or self._gate.masked_problem(input)
        if problem:
            raise ValueError(problem)
        problem = self._gate.decision_problem(input)
        if problem and not self._gate.may_be_requesting(input):
            raise ValueError(problem)

    @workflow.signal(name="decide_approval_signal")
    async def decide_approval_signal(self, input: DecideApprovalInput) -> None:
        """The same as the decide_approval update, for tools that can only signal; an invalid decision is
        ignored (and logged), since a signal cannot be refused."""
        await self._gate.await_requests(input)
        problem = decision_nul_problem(input) or self._gate.decision_problem(input)
        if problem:
            workflow.logger.warning("decide_approval_signal ignored: %s", problem)
            return
        self._gate.decide(input)

    def _check_open(self) -> None:
        if self._abort is not None or self._state.status in ("completed", "cancelled"):
            raise ValueError(f"the workflow is {self._state.status}; it cannot change any more")

    def _request_abort(self, input: AbortInput) -> None:
        self._abort = input
        self._run.change(input.actor, "abort", None, {"reason": input.reason}, input.origin)

    # ---- the run ----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, _input: IncidentWorkflowInput) -> WorkflowState:
        return await self._run_playbook()

    async def _run_playbook(self) -> WorkflowState:
        run = self._run
        self._state.status = "in_progress"
        self._state.started_at = run.now()
        await self._open()
        while self._abort is None:
            await self._advance()
            run.projection.kick()
            if not run.tasks:
                outcome = dag.outcome(run.playbook, run.facts)
                if outcome == "completed":
                    self._state.status = "completed"
                    break
                if outcome == "halted" and not await self._wait_for_retry():
                    break
                if outcome is None and not run.wake:
                    break  # nothing can move (defensive: a validated DAG never gets here)
                continue
            run.wake = False
            await workflow.wait_condition(lambda: run.wake or self._abort is not None)
        return await self._finish()

    async def _open(self) -> None:
        """The workflow's first projection row (the row step rows refer to). The first agent activity writes
        it before its own step, and so does the workflow's first write of its own, whichever comes first: a
        local activity here would cost the first task a round of its own."""
        projection = self._run.projection
        if self._run.input.agents_open_projection:  # a flag in the input, not a patch: no marker, no extra event
            projection.opening = projection.snapshot()
        else:
            await projection.record_workflow(wait=True)

    async def _advance(self) -> None:
        """Apply the scheduler's moves until it has none."""
        run = self._run
        while True:
            moves = dag.plan(run.playbook, run.facts)
            if moves.empty():
                return
            for step_id, reason in moves.skip.items():
                await run.settle(step_id, "skipped", note=reason, spreads=True)
            for step_id, reason in moves.fail.items():
                await run.settle(step_id, "failed", error=reason)
            for step_id, reason in moves.cancel.items():
                run.step(step_id).note = reason
                run.tasks[step_id].cancel()
            for step_id in moves.start:
                spec = run.playbook.step(step_id)
                skip = self._condition_skip(spec)
                if skip:
                    await run.settle(step_id, "skipped", note=skip)
                    continue
                run.facts[step_id].status = "running"
                run.tasks[step_id] = asyncio.create_task(self._steps.run(spec))
            if moves.cancel or moves.start:
                run.note_running()
                if not (moves.skip or moves.fail):
                    return

    def _condition_skip(self, spec: StepSpec) -> str | None:
        if not spec.when:
            return None
        activation = {
            "steps": {s.step_id: {"status": s.status, "output": s.output or {}} for s in self._state.steps},
            "incident": asdict(self._run.input.incident),
            "vars": self._run.playbook.variable_values(),
        }
        try:
            return None if evaluate(spec.when, activation) else f"condition is false: {spec.when}"
        except ConditionError as err:
            return f"condition {err}; skipped to be safe"

    async def _wait_for_retry(self) -> bool:
        """Failed: wait (durably) for retry_step or abort. True when a retry arrived."""
        run = self._run
        self._halted = True
        self._state.status = "failed"
        failed = [s.step_id for s in self._state.steps if s.status == "failed"]
        self._state.error = f"step {', '.join(failed)} failed; waiting for retry_step or abort"
        await run.projection.record_workflow(wait=True)
        await run.projection.drain()
        if run.input.retry_window_seconds <= 0:
            return False
        escalating = asyncio.create_task(escalate(run, self._state.error)) if run.input.escalation else None
        try:
            await workflow.wait_condition(
                lambda: self._retry is not None or self._abort is not None,
                timeout=timedelta(seconds=run.input.retry_window_seconds),
                timeout_summary="retry window",
            )
        except TimeoutError:
            self._state.error = f"step {', '.join(failed)} failed; no retry within the retry window"
            return False
        finally:
            if escalating is not None:
                escalating.cancel()
        self._halted = False
        if self._abort is not None or self._retry is None:
            return False
        retry, self._retry = self._retry, None
        for step_id in check_retry(run.playbook, run.facts, retry.step_id, retry.params, True):
            step = run.step(step_id)
            if retry.params is not None:
                step.params = copy.deepcopy(retry.params)
                run.changed(step_id, retry.actor)
            step.status, step.error, step.note = "pending", None, None
            run.facts[step_id] = dag.StepFacts()
            await run.projection.record_step(step)
        self._state.error = None
        self._state.status = "in_progress"
        await run.projection.record_workflow()
        return True

    async def _finish(self) -> WorkflowState:
        run = self._run
        if self._abort is not None:
            for task in list(run.tasks.values()):
                task.cancel()
            while run.tasks:
                await workflow.wait_condition(lambda: not run.tasks or run.wake)
                run.wake = False
            self._state.status = "cancelled"
            self._state.error = f"aborted by {self._abort.actor}" + (
                f": {self._abort.reason}" if self._abort.reason else ""
            )
        elif self._state.status != "completed":
            self._state.status = "failed"
        for step in self._state.steps:
            if step.status == "pending":
                step.status, step.note = (
                    ("cancelled", "workflow aborted") if self._abort else ("skipped", "not reached")
                )
                await run.projection.record_step(step)
        self._state.current_steps = []
        self._state.finished_at = run.now()
        await run.projection.record_workflow(wait=True)
        await run.projection.drain()
        await self._gate.outcomes_told()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._state.status == "failed":
            # Failed in the Temporal UI and `temporal workflow list` too, not just in our tables.
            raise ApplicationError(
                self._state.error or "incident workflow failed", type="IncidentFailed", non_retryable=True
            )
        return self._state
