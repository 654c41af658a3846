"""IncidentWorkflow: one per incident. Interprets the pinned playbook's DAG, running agents as activities.

Named handlers for the Temporal UI and CLI: query `status`; updates `retry_step`, `abort`, `add_step`,
`remove_step`, `update_step_params`, `decide_approval` (each validated before it is written to history);
signals `abort_signal`, `decide_approval_signal`.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable
from dataclasses import asdict
from datetime import timedelta
from typing import Any, TypeVar

import msgspec
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from core import dag
    from core.approval_rules import (
        decision_input_problem,
        decision_nul_problem,
        masked_problem,
        may_decide,
        modification_problem,
        needs_approval,
        unmask_params,
    )
    from core.conditions import ConditionError, evaluate
    from core.payloads import (
        WEBHOOK_AGENT_ACTIVITY,
        AbortInput,
        AddStepInput,
        AgentInput,
        AgentResult,
        ApprovalDecided,
        ApprovalRequest,
        ApprovalState,
        ApprovalTicket,
        DecideApprovalInput,
        DecisionOrigin,
        IncidentWorkflowInput,
        NotifyApproval,
        RemoveStepInput,
        RetryStepInput,
        StepRecord,
        StepState,
        UpdateStepParamsInput,
        WorkflowState,
    )
    from core.playbook import Playbook, StepSpec, substitute
    from workflows.changes import check_add, check_params, check_remove, check_retry, refuse_nul
    from workflows.incident.projection_writer import PROJECTION_RETRY, PROJECTION_TIMEOUT, ProjectionWriter

NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=2), maximum_attempts=8
)

T = TypeVar("T")


def _retry_policy(step: StepSpec) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=step.retry.initial_interval_seconds),
        backoff_coefficient=step.retry.backoff,
        maximum_interval=timedelta(seconds=step.retry.max_interval_seconds),
        maximum_attempts=step.retry.max_attempts,
    )


# Unsandboxed: the sandbox re-imports and proxies modules for every run, which cost about a third of the
# throughput (bench/engine.py); this module imports only temporalio, the standard library and passed-through
# core modules, and the replay test over recorded histories catches non-determinism instead.
@workflow.defn(name="IncidentWorkflow", sandboxed=False)
class IncidentWorkflow:
    @workflow.init
    def __init__(self, input: IncidentWorkflowInput) -> None:
        self._input = input
        self._playbook = Playbook.model_validate(input.playbook)
        self._facts = {s.id: dag.StepFacts() for s in self._playbook.steps}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = False
        self._halted = False
        self._retry: RetryStepInput | None = None
        self._abort: AbortInput | None = None
        self._notifications: list[asyncio.Task[None]] = []
        self._requesting: set[str] = set()  # steps whose approval request is being recorded
        # Who decided each approval and from where, for its audit row: kept out of the state the `status`
        # query shows (viewers read it; IP addresses are for the audit log's readers).
        self._origins: dict[int, DecisionOrigin] = {}
        self._outcomes: list[asyncio.Task[None]] = []  # telling channels how approvals ended: awaited at the end
        self._changed_by: dict[str, str] = {}  # steps added or changed at run time, and by whom (guard_changes)
        self._change_origins: list[DecisionOrigin | None] = []  # beside state.changes: who, from where (audit)
        self._state = WorkflowState(
            workflow_id=workflow.info().workflow_id,
            incident_id=input.incident.incident_id,
            playbook_id=self._playbook.id,
            playbook_version=self._playbook.version,
            status="pending",
            current_steps=[],
            steps=[self._new_step(s, i) for i, s in enumerate(self._playbook.steps)],
            audits_changes=input.guard_changes,
        )
        self._projection = ProjectionWriter(self._state, self._change_origins, self._set_wake)

    @staticmethod
    def _new_step(spec: StepSpec, position: int) -> StepState:
        return StepState(step_id=spec.id, agent=spec.agent, position=position, params=msgspec.to_builtins(spec.params))

    # ---- queries and updates ----------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> WorkflowState:
        """Live state: workflow status, current step(s), per-step status, output, attempts."""
        return self._state

    @workflow.update(name="retry_step")
    def retry_step(self, input: RetryStepInput) -> WorkflowState:
        """Run the failed step (or every failed step) again, optionally with new params."""
        self._retry = input
        self._change(input.actor, "retry_step", input.step_id, {"params": input.params}, input.origin)
        return self._state

    @retry_step.validator
    def _validate_retry(self, input: RetryStepInput) -> None:
        refuse_nul(input)
        check_retry(self._playbook, self._facts, input.step_id, input.params, self._halted and self._retry is None)

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
        step = self._check_add(input)
        self._playbook = self._playbook.model_copy(update={"steps": [*self._playbook.steps, step]})
        self._facts[step.id] = dag.StepFacts()
        self._state.steps.append(self._new_step(step, len(self._state.steps)))
        self._change(input.actor, "add_step", step.id, {"step": step.model_dump(mode="json")}, input.origin)
        self._changed(step.id, input.actor)
        return self._state

    @add_step.validator
    def _validate_add(self, input: AddStepInput) -> None:
        refuse_nul(input)
        self._check_open()
        self._check_add(input)

    def _check_add(self, input: AddStepInput) -> StepSpec:
        return check_add(
            self._playbook, self._facts, input.step, set(self._input.known_agents), self._input.agent_risks
        )

    @workflow.update(name="remove_step")
    def remove_step(self, input: RemoveStepInput) -> WorkflowState:
        """Remove a step that has not started."""
        self._playbook = self._playbook.model_copy(
            update={"steps": [s for s in self._playbook.steps if s.id != input.step_id]}
        )
        del self._facts[input.step_id]
        self._state.steps = [s for s in self._state.steps if s.step_id != input.step_id]
        self._change(input.actor, "remove_step", input.step_id, {}, input.origin)
        return self._state

    @remove_step.validator
    def _validate_remove(self, input: RemoveStepInput) -> None:
        refuse_nul(input)
        self._check_open()
        check_remove(self._playbook, self._facts, input.step_id)

    @workflow.update(name="update_step_params")
    def update_step_params(self, input: UpdateStepParamsInput) -> WorkflowState:
        """Change the params of a step that has not started."""
        self._step(input.step_id).params = copy.deepcopy(input.params)
        self._change(input.actor, "update_step_params", input.step_id, {"params": input.params}, input.origin)
        self._changed(input.step_id, input.actor)
        return self._state

    @update_step_params.validator
    def _validate_params(self, input: UpdateStepParamsInput) -> None:
        refuse_nul(input)
        self._check_open()
        check_params(self._playbook, self._facts, input.step_id, input.params)

    @workflow.update(name="decide_approval")
    async def decide_approval(self, input: DecideApprovalInput) -> WorkflowState:
        """Approve (optionally with edited params) or reject a step's pending approval."""
        await self._await_requests(input)
        problem = self._decision_problem(input)
        if problem:  # only when the decision came while its request was being recorded (see the validator)
            raise ApplicationError(problem, type="DecisionRefused", non_retryable=True)
        self._decide(input)
        return self._state

    @decide_approval.validator
    def _validate_decision(self, input: DecideApprovalInput) -> None:
        # Checks that came after decisions were first written to histories run here only (a validator does
        # not run on replay), so a decision an older version took is taken again on replay.
        problem = decision_input_problem(input) or self._masked_problem(input)
        if problem:
            raise ValueError(problem)
        problem = self._decision_problem(input)
        if problem and not self._may_be_requesting(input):
            raise ValueError(problem)

    def _masked_problem(self, input: DecideApprovalInput) -> str | None:
        step, _ = self._pending_approval(input)
        if step is None or input.params is None or not isinstance(input.params, dict):
            return None
        return masked_problem(step.params, input.params)

    @workflow.signal(name="decide_approval_signal")
    async def decide_approval_signal(self, input: DecideApprovalInput) -> None:
        """The same as the decide_approval update, for tools that can only signal; an invalid decision is
        ignored (and logged), since a signal cannot be refused."""
        await self._await_requests(input)
        problem = decision_nul_problem(input) or self._decision_problem(input)
        if problem:
            workflow.logger.warning("decide_approval_signal ignored: %s", problem)
            return
        self._decide(input)

    def _may_be_requesting(self, input: DecideApprovalInput) -> bool:
        """A step whose approval request is being recorded: its row may already be visible to the API (and a
        decision on its way) before the workflow has the request's id. Such a decision waits for it."""
        if input.decision not in ("approve", "reject"):
            return False
        return any(input.step_id in (None, step_id) for step_id in self._requesting)

    async def _await_requests(self, input: DecideApprovalInput) -> None:
        await workflow.wait_condition(lambda: not self._may_be_requesting(input))

    def _pending_approval(self, input: DecideApprovalInput) -> tuple[StepState | None, str | None]:
        for step in self._state.steps:
            approval = step.approval
            if approval is None:
                continue
            if input.approval_id is not None and approval.approval_id != input.approval_id:
                continue
            if input.step_id is not None and step.step_id != input.step_id:
                continue
            if approval.status != "pending":
                continue
            return step, None
        which = f"approval {input.approval_id}" if input.approval_id is not None else f"step {input.step_id}"
        if input.approval_id is None and input.step_id is None:
            which = "any step"
        decided = [
            s.approval
            for s in self._state.steps
            if s.approval is not None
            and (input.approval_id in (None, s.approval.approval_id))
            and (input.step_id in (None, s.step_id))
        ]
        if decided:
            last = decided[-1]
            return None, f"{which} is already {last.status}" + (f" by {last.decided_by}" if last.decided_by else "")
        return None, f"no pending approval for {which}"

    def _decision_problem(self, input: DecideApprovalInput) -> str | None:
        if input.decision not in ("approve", "reject"):
            return f"decision must be approve or reject, not {input.decision!r}"
        step, problem = self._pending_approval(input)
        if step is None or step.approval is None:
            return problem
        if not may_decide(step.approval.approvers, actor=input.actor, role=input.actor_role, teams=input.actor_teams):
            return f"{input.actor} may not decide this approval (approvers: {_approvers_text(step.approval.approvers)})"
        if step.approval.changed_by == input.actor and input.actor_role != "admin":
            return (
                f"{input.actor} may not decide this approval: they added or changed step {step.step_id} at run "
                "time, so someone else must"
            )
        if input.params is not None:
            if input.decision != "approve":
                return "params can only come with approve (approve with modifications)"
            return modification_problem(step.params, input.params)
        return None

    def _decide(self, input: DecideApprovalInput) -> None:
        step, _ = self._pending_approval(input)
        assert step is not None and step.approval is not None
        approval = step.approval
        approval.status = "approved" if input.decision == "approve" else "rejected"
        approval.decided_by, approval.decided_at, approval.channel = input.actor, self._now(), input.channel
        approval.comment = input.comment or None
        edited = copy.deepcopy(input.params) if input.decision == "approve" else None
        # Values the approver sent back as the page showed them, redacted, are the step's real ones again.
        approval.modified_params = None if edited is None else unmask_params(step.params, edited)
        self._origins[approval.approval_id] = input.origin or DecisionOrigin()  # none: the `temporal` CLI
        detail: dict[str, Any] = {"decision": approval.status, "channel": input.channel, "comment": input.comment}
        if edited is not None:
            detail["params"] = edited  # as sent
        self._change(input.actor, "decide_approval", step.step_id, detail)

    def _changed(self, step_id: str, actor: str) -> None:
        """Mark a step added or changed at run time: its approval is a person's, and not this one's."""
        if self._input.guard_changes:
            self._changed_by[step_id] = actor

    def _check_open(self) -> None:
        if self._abort is not None or self._state.status in ("completed", "cancelled"):
            raise ValueError(f"the workflow is {self._state.status}; it cannot change any more")

    def _request_abort(self, input: AbortInput) -> None:
        self._abort = input
        self._change(input.actor, "abort", None, {"reason": input.reason}, input.origin)

    def _change(
        self, actor: str, kind: str, step_id: str | None, detail: dict[str, Any], origin: DecisionOrigin | None = None
    ) -> None:
        self._state.changes.append({"at": self._now(), "actor": actor, "kind": kind, "step_id": step_id, **detail})
        if self._input.guard_changes:
            self._change_origins.append(origin)
        self._wake = True

    # ---- the run ----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, _input: IncidentWorkflowInput) -> WorkflowState:
        self._set_status("in_progress")
        self._state.started_at = self._now()
        await self._open()
        while self._abort is None:
            await self._advance()
            self._projection.kick()
            if not self._tasks:
                outcome = dag.outcome(self._playbook, self._facts)
                if outcome == "completed":
                    self._set_status("completed")
                    break
                if outcome == "halted" and not await self._wait_for_retry():
                    break
                if outcome is None and not self._wake:
                    break  # nothing can move (defensive: a validated DAG never gets here)
                continue
            self._wake = False
            await workflow.wait_condition(lambda: self._wake or self._abort is not None)
        return await self._finish()

    async def _open(self) -> None:
        """The workflow's first projection row (the row step rows refer to). The first agent activity writes
        it before its own step, and so does the workflow's first write of its own, whichever comes first: a
        local activity here would cost the first task a round of its own."""
        if self._input.agents_open_projection:  # a flag in the input, not a patch: no marker, no extra event
            self._projection.opening = self._projection.snapshot()
        else:
            await self._projection.record_workflow(wait=True)

    async def _advance(self) -> None:
        """Apply the scheduler's moves until it has none."""
        while True:
            moves = dag.plan(self._playbook, self._facts)
            if moves.empty():
                return
            for step_id, reason in moves.skip.items():
                await self._settle(step_id, "skipped", note=reason, spreads=True)
            for step_id, reason in moves.fail.items():
                await self._settle(step_id, "failed", error=reason)
            for step_id, reason in moves.cancel.items():
                self._step(step_id).note = reason
                self._tasks[step_id].cancel()
            for step_id in moves.start:
                spec = self._playbook.step(step_id)
                skip = self._condition_skip(spec)
                if skip:
                    await self._settle(step_id, "skipped", note=skip)
                    continue
                self._facts[step_id].status = "running"
                self._tasks[step_id] = asyncio.create_task(self._run_step(spec))
            if moves.cancel or moves.start:
                self._state.current_steps = [s.step_id for s in self._state.steps if s.status == "running"]
                if not (moves.skip or moves.fail):
                    return

    def _condition_skip(self, spec: StepSpec) -> str | None:
        if not spec.when:
            return None
        activation = {
            "steps": {s.step_id: {"status": s.status, "output": s.output or {}} for s in self._state.steps},
            "incident": asdict(self._input.incident),
            "vars": self._playbook.variables,
        }
        try:
            return None if evaluate(spec.when, activation) else f"condition is false: {spec.when}"
        except ConditionError as err:
            return f"condition {err}; skipped to be safe"

    async def _wait_for_retry(self) -> bool:
        """Failed: wait (durably) for retry_step or abort. True when a retry arrived."""
        self._halted = True
        self._set_status("failed")
        failed = [s.step_id for s in self._state.steps if s.status == "failed"]
        self._state.error = f"step {', '.join(failed)} failed; waiting for retry_step or abort"
        await self._projection.record_workflow(wait=True)
        await self._projection.drain()
        if self._input.retry_window_seconds <= 0:
            return False
        try:
            await workflow.wait_condition(
                lambda: self._retry is not None or self._abort is not None,
                timeout=timedelta(seconds=self._input.retry_window_seconds),
                timeout_summary="retry window",
            )
        except TimeoutError:
            self._state.error = f"step {', '.join(failed)} failed; no retry within the retry window"
            return False
        self._halted = False
        if self._abort is not None or self._retry is None:
            return False
        retry, self._retry = self._retry, None
        steps = check_retry(self._playbook, self._facts, retry.step_id, retry.params, True)
        for step_id in steps:
            step = self._step(step_id)
            if retry.params is not None:
                step.params = copy.deepcopy(retry.params)
                self._changed(step_id, retry.actor)
            step.status, step.error, step.note = "pending", None, None
            self._facts[step_id] = dag.StepFacts()
            await self._projection.record_step(step)
        self._state.error = None
        self._set_status("in_progress")
        await self._projection.record_workflow()
        return True

    async def _run_step(self, spec: StepSpec) -> None:
        step = self._step(spec.id)
        step.runs += 1
        step.output = step.error = step.note = step.approval = None
        if needs_approval(spec.requires_approval, spec.risk):
            try:
                if not await self._approval_gate(spec, step):
                    return
            except (asyncio.CancelledError, CancelledError):
                await self._settle(spec.id, "cancelled", note=step.note or "cancelled while waiting for approval")
                return
        step.status, step.started_at, step.finished_at = "running", self._now(), None
        agent_input = self._agent_input(spec, step)
        checks = spec.repeat.count if spec.repeat else 1
        self._state.current_steps = [s.step_id for s in self._state.steps if s.status == "running"]
        try:
            for check in range(1, checks + 1):
                # The agent activity records its step (running, then its outcome) in the projection itself.
                agent_input.record = StepRecord(
                    incident_id=self._state.incident_id,
                    agent=spec.agent,
                    position=step.position,
                    runs=step.runs,
                    started_at=step.started_at,
                    seq_base=self._projection.reserve_seq(),
                    fail_on_negative=spec.fail_on_negative,
                    check=check,
                    checks=checks,
                    opening=self._projection.opening,
                )
                result = await workflow.execute_activity(
                    WEBHOOK_AGENT_ACTIVITY if spec.agent in self._input.webhook_agents else spec.agent,
                    agent_input,
                    result_type=AgentResult,
                    start_to_close_timeout=timedelta(seconds=spec.timeout_seconds),
                    heartbeat_timeout=timedelta(seconds=spec.heartbeat_seconds) if spec.heartbeat_seconds else None,
                    retry_policy=_retry_policy(spec),
                    summary=f"{spec.id}: {spec.agent}",
                )
                if agent_input.record.opening is not None:  # that attempt wrote it, with its step
                    self._projection.opening = None
                if spec.repeat:
                    result.data["checks"] = {"done": check, "allowed": checks}
                step.attempt = int(result.data.get("attempt", 1))
                step.output = msgspec.to_builtins(result)  # a copy, 20x faster than asdict
                if result.ok or check == checks:
                    break
                await workflow.sleep(
                    timedelta(seconds=spec.repeat.interval_seconds if spec.repeat else 0),
                    summary=f"{spec.id}: check {check}/{checks} negative, checking again",
                )
        except (asyncio.CancelledError, CancelledError):
            await self._settle(spec.id, "cancelled", note=step.note or "cancelled")
            return
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                await self._settle(spec.id, "cancelled", note=step.note or "cancelled")
                return
            cause = err.cause
            reason = "timed out" if isinstance(cause, ActivityTimeout) else str(cause or err)
            await self._settle(spec.id, "failed", error=f"{spec.agent}: {reason}")
            return
        ok = bool(step.output and step.output["ok"])
        if ok or not spec.fail_on_negative:
            await self._settle(spec.id, "completed", recorded=True)
        else:
            summary = step.output["summary"] if step.output else "negative"
            await self._settle(spec.id, "failed", error=summary, recorded=True)

    async def _approval_gate(self, spec: StepSpec, step: StepState) -> bool:  # noqa: C901 (the gate's states; issue 18 moves it to its own module)
        """Wait for a human decision (or a policy's) before the step runs. True: approved (with any edited
        params applied). Otherwise the step is skipped, and so are its dependents: rejected, or no decision
        by expires_at (expired, treated as a rejection)."""
        timeout = timedelta(seconds=spec.approval_timeout_seconds or self._input.approval_timeout_seconds)
        expires_at = workflow.now() + timeout
        step.status = "waiting_approval"
        self._facts[spec.id].status = "waiting_approval"
        await self._refresh_status()
        await self._projection.record_step(step)
        self._requesting.add(spec.id)
        try:
            ticket, aborted = await self._to_the_end(
                workflow.execute_activity(
                    "request_approval",
                    ApprovalRequest(
                        workflow_id=self._state.workflow_id,
                        incident_id=self._state.incident_id,
                        step_id=spec.id,
                        run=step.runs,
                        agent=spec.agent,
                        action=spec.instructions or f"run {spec.agent}",
                        params=step.params,
                        context_summary=self._context_summary(spec),
                        risk=spec.risk,
                        impact=spec.impact,
                        expires_at=expires_at.isoformat(),
                        incident_type=self._input.incident.incident_type,
                        service=self._input.incident.service,
                        changed_by=self._changed_by.get(spec.id),
                    ),
                    result_type=ApprovalTicket,
                    start_to_close_timeout=PROJECTION_TIMEOUT,
                    retry_policy=PROJECTION_RETRY,
                    summary=f"{spec.id}: request approval",
                )
            )
        finally:
            self._requesting.discard(spec.id)
        approval = step.approval = ApprovalState(
            approval_id=ticket.approval_id,
            status=ticket.status,
            risk=spec.risk,
            expires_at=expires_at.isoformat(),
            approvers=ticket.approvers,
            policy=ticket.policy,
            changed_by=self._changed_by.get(spec.id),
        )
        if ticket.policy and ticket.status == "approved":
            approval.decided_by, approval.channel = f"policy:{ticket.policy}", "policy"
        if aborted is not None:  # while the request was being recorded: its row must not wait for ever
            if approval.status == "pending":
                self._aborted(approval)
                await self._record_decision(spec, approval)
            raise aborted
        for channel in ticket.channels:  # beside the timer: a channel that is down never delays the expiry
            self._notifications.append(asyncio.create_task(self._notify(spec, approval.approval_id, channel)))
        self._wake = True
        if approval.status == "pending":
            try:
                await workflow.wait_condition(
                    lambda: approval.status != "pending",
                    timeout=expires_at - workflow.now(),
                    timeout_summary=f"approval of {spec.id} expires",
                )
            except TimeoutError:
                if approval.status == "pending" or not self._input.approvals_outlive_abort:
                    approval.status, approval.decided_by = "expired", "timer"
                    approval.decided_at, approval.channel = expires_at.isoformat(), "timer"
                    self._origins.pop(approval.approval_id, None)
            except (asyncio.CancelledError, CancelledError):
                if approval.status == "pending" or not self._input.approvals_outlive_abort:
                    self._aborted(approval)
                await self._record_decision(spec, approval)  # a decision taken in the same task is kept
                raise
            await self._record_decision(spec, approval)
            if "slack" in ticket.channels:  # the request's message shows how it ended, wherever it was decided
                self._outcomes.append(asyncio.create_task(self._notify(spec, approval.approval_id, "slack", "outcome")))
        self._facts[spec.id].status = "running"
        if approval.status != "approved":
            reason = f"approval {approval.status}" + (
                f" by {approval.decided_by}" if approval.status == "rejected" else f" at {approval.expires_at}"
            )
            if approval.comment:
                reason += f": {approval.comment}"
            await self._settle(spec.id, "skipped", note=reason, spreads=True)
            await self._refresh_status()
            return False
        if approval.modified_params is not None:
            step.params = copy.deepcopy(approval.modified_params)
        step.status = "running"
        await self._refresh_status()
        return True

    async def _notify(self, spec: StepSpec, approval_id: int, channel: str, kind: str = "request") -> None:
        try:
            await workflow.execute_activity(
                "notify_approval",
                NotifyApproval(approval_id=approval_id, channel=channel, kind=kind),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"{spec.id}: {'ask' if kind == 'request' else 'tell the outcome'} on {channel}",
            )
        except (ActivityError, asyncio.CancelledError, CancelledError) as err:
            workflow.logger.warning("approval %s: %s notification gave up: %s", approval_id, channel, err)

    def _aborted(self, approval: ApprovalState) -> None:
        approval.status, approval.decided_by, approval.decided_at = "rejected", "workflow", self._now()
        approval.channel, approval.comment = "workflow", "the workflow was aborted"
        self._origins.pop(approval.approval_id, None)  # no person decided it

    async def _to_the_end(self, activity: Awaitable[T]) -> tuple[T, BaseException | None]:
        """The activity's result, and the cancellation (an abort) that came while it ran, if any. With
        approvals_outlive_abort the activity is shielded: the step's cancellation waits for its end instead of
        cancelling it (an approval's record, half written or never started, would be pending for ever)."""
        if not self._input.approvals_outlive_abort:
            return await activity, None
        task = asyncio.ensure_future(activity)
        try:
            return await asyncio.shield(task), None
        except (asyncio.CancelledError, CancelledError) as cancelled:
            return await task, cancelled

    async def _record_decision(self, spec: StepSpec, approval: ApprovalState) -> None:
        _, aborted = await self._to_the_end(self._record_decision_activity(spec, approval))
        if aborted is not None:
            raise aborted

    def _record_decision_activity(self, spec: StepSpec, approval: ApprovalState) -> Awaitable[Any]:
        return workflow.execute_activity(
            "record_approval_decision",
            ApprovalDecided(
                approval_id=approval.approval_id,
                workflow_id=self._state.workflow_id,
                incident_id=self._state.incident_id,
                step_id=spec.id,
                status=approval.status,
                decided_by=approval.decided_by or "unknown",
                decided_at=approval.decided_at or self._now(),
                channel=approval.channel or "temporal",
                comment=approval.comment,
                modified_params=approval.modified_params,
                origin=self._origins.pop(approval.approval_id, None),  # a person's decision only
            ),
            start_to_close_timeout=PROJECTION_TIMEOUT,
            retry_policy=PROJECTION_RETRY,
            summary=f"{spec.id}: approval {approval.status}",
        )

    def _context_summary(self, spec: StepSpec) -> str:
        """What the approver reads about why: each dependency's summary."""
        lines = []
        for dep in spec.depends_on:
            output = self._step(dep).output or {}
            lines.append(f"{dep}: {output.get('summary') or self._step(dep).status}")
        return "\n".join(lines)[:4000]

    async def _refresh_status(self) -> None:
        """in_progress ⇄ waiting_approval as steps start and stop waiting for a decision."""
        if self._state.status not in ("in_progress", "waiting_approval"):
            return
        waiting = any(s.status == "waiting_approval" for s in self._state.steps)
        status = "waiting_approval" if waiting else "in_progress"
        if status != self._state.status:
            self._set_status(status)
            self._state.current_steps = [s.step_id for s in self._state.steps if s.status == "running"]
            await self._projection.record_workflow()

    def _agent_input(self, spec: StepSpec, step: StepState) -> AgentInput:
        outputs = {dep: msgspec.to_builtins(self._step(dep).output) for dep in spec.depends_on}  # copies
        variables = {
            **self._playbook.variables,
            **{f"vars.{k}": v for k, v in self._playbook.variables.items()},
            **{f"incident.{k}": str(v) for k, v in msgspec.to_builtins(self._input.incident).items()},
        }
        previous = outputs[spec.depends_on[0]] if len(spec.depends_on) == 1 else (outputs or None)
        return AgentInput(
            incident=self._input.incident,
            workflow_id=self._state.workflow_id,
            step_id=spec.id,
            previous_agent_output=previous,
            dependency_outputs=outputs,
            params=substitute(step.params, variables),
            instructions=substitute(spec.instructions, variables),
            run=step.runs,
            context_budget_tokens=spec.context_budget_tokens,
            agent=spec.agent,
        )

    async def _settle(
        self,
        step_id: str,
        status: str,
        *,
        error: str | None = None,
        note: str | None = None,
        spreads: bool = False,
        recorded: bool = False,  # the agent activity already wrote this outcome
    ) -> None:
        step = self._step(step_id)
        step.status, step.error = status, error
        if note:
            step.note = note
        if status != "skipped" or step.started_at:
            step.finished_at = self._now()
        self._facts[step_id] = dag.StepFacts(status=status, skip_spreads=spreads)
        self._tasks.pop(step_id, None)
        self._state.current_steps = [s.step_id for s in self._state.steps if s.status == "running"]
        self._wake = True
        if not recorded:
            await self._projection.record_step(step)

    async def _finish(self) -> WorkflowState:
        if self._abort is not None:
            for task in list(self._tasks.values()):
                task.cancel()
            while self._tasks:
                await workflow.wait_condition(lambda: not self._tasks or self._wake)
                self._wake = False
            self._set_status("cancelled")
            self._state.error = f"aborted by {self._abort.actor}" + (
                f": {self._abort.reason}" if self._abort.reason else ""
            )
        elif self._state.status != "completed":
            self._set_status("failed")
        for step in self._state.steps:
            if step.status == "pending":
                step.status, step.note = (
                    ("cancelled", "workflow aborted") if self._abort else ("skipped", "not reached")
                )
                await self._projection.record_step(step)
        self._state.current_steps = []
        self._state.finished_at = self._now()
        await self._projection.record_workflow(wait=True)
        await self._projection.drain()
        if self._outcomes:  # the workflow would otherwise close before they run (each gives up on its own)
            await asyncio.gather(*self._outcomes)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._state.status == "failed":
            # Failed in the Temporal UI and `temporal workflow list` too, not just in our tables.
            raise ApplicationError(
                self._state.error or "incident workflow failed", type="IncidentFailed", non_retryable=True
            )
        return self._state

    # ---- helpers ----------------------------------------------------------------------------------

    def _step(self, step_id: str) -> StepState:
        for step in self._state.steps:
            if step.step_id == step_id:
                return step
        raise KeyError(step_id)

    def _set_status(self, status: str) -> None:
        self._state.status = status

    def _now(self) -> str:
        return workflow.now().isoformat()

    def _set_wake(self) -> None:
        self._wake = True


def _approvers_text(approvers: dict[str, Any]) -> str:
    named = [*approvers.get("users", []), *(f"team {t}" for t in approvers.get("teams", []))]
    return ", ".join(named) if named else f"role {approvers.get('role') or 'approver'} or above"
