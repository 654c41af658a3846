"""The approval gate before a risky step: the `request_approval` activity (a policy may decide at once), the
channels asked beside a durable timer that expires the request (treated as a rejection), the decisions that
come as an Update or a signal (who may decide, what they may change), and the record of how it ended."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from core.activity_defs import ApprovalActivityDefs, NotifyActivityDefs
    from core.approval_rules import masked_problem, may_decide, modification_problem, unmask_params
    from core.dry_run import DryRunActivityDefs
    from core.payloads import (
        ApprovalDecided,
        ApprovalRequest,
        ApprovalState,
        ApprovalTicket,
        DecideApprovalInput,
        DecisionOrigin,
        NotifyApproval,
        StepState,
    )
    from core.playbook import StepSpec
    from workflows.incident.projection_writer import PROJECTION_RETRY, PROJECTION_TIMEOUT
    from workflows.incident.state import IncidentRun

NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=2), maximum_attempts=8
)

T = TypeVar("T")


class ApprovalGate:
    """Owned by the workflow: waits for the decisions on its run's steps and takes the decisions its handlers
    pass on."""

    def __init__(self, run: IncidentRun) -> None:
        self._run = run
        self._requesting: set[str] = set()  # steps whose approval request is being recorded
        # Who decided each approval and from where, for its audit row: kept out of the state the `status`
        # query shows (viewers read it; IP addresses are for the audit log's readers).
        self._origins: dict[int, DecisionOrigin] = {}
        self._notifications: list[asyncio.Task[None]] = []
        self._outcomes: list[asyncio.Task[None]] = []  # telling channels how approvals ended: awaited at the end

    # ---- the gate ---------------------------------------------------------------------------------

    async def passes(self, spec: StepSpec, step: StepState) -> bool:
        """Wait for a human decision (or a policy's) before the step runs. True: approved (with any edited
        params applied). Otherwise — rejected, or no decision by expires_at (expired, treated as a rejection) —
        the step fails, so the run waits for retry_step or abort and the incident stays open (runs started before
        `unapproved_fails`: the step and its dependents are skipped)."""
        run = self._run
        timeout = timedelta(seconds=spec.approval_timeout_seconds or run.input.approval_timeout_seconds)
        expires_at = workflow.now() + timeout
        if run.dry_run_id is not None:
            return await self._previewed(spec, step, expires_at, timeout)
        step.status = "waiting_approval"
        run.facts[spec.id].status = "waiting_approval"
        await run.refresh_status()
        await run.projection.record_step(step)
        ticket, approval = await self._request(spec, step, expires_at)
        for channel in ticket.channels:  # beside the timer: a channel that is down never delays the expiry
            self._notifications.append(asyncio.create_task(self._notify(spec, approval.approval_id, channel)))
        run.wake = True
        if approval.status == "pending":
            await self._wait(spec, approval, expires_at)
            if "slack" in ticket.channels:  # the request's message shows how it ended, wherever it was decided
                self._outcomes.append(asyncio.create_task(self._notify(spec, approval.approval_id, "slack", "outcome")))
        run.facts[spec.id].status = "running"
        if approval.status != "approved":
            if run.input.unapproved_fails:  # the fix did not run: the incident is not over (retry_step asks again)
                await run.settle(spec.id, "failed", error=f"not run: {_skip_reason(approval)}")
            else:
                await run.settle(spec.id, "skipped", note=_skip_reason(approval), spreads=True)
            await run.refresh_status()
            return False
        if approval.modified_params is not None:
            step.params = copy.deepcopy(approval.modified_params)
        step.status = "running"
        await run.refresh_status()
        return True

    async def _previewed(self, spec: StepSpec, step: StepState, expires_at: datetime, timeout: timedelta) -> bool:
        """A dry run's gate: who would be asked (or which policy would approve), by the same policies, with nothing
        recorded and nobody asked; the run goes on as if approved, and the step's approval says so."""
        preview = await workflow.execute_activity_method(
            DryRunActivityDefs.preview_approval,
            self._request_input(spec, step, expires_at),
            start_to_close_timeout=PROJECTION_TIMEOUT,
            retry_policy=PROJECTION_RETRY,
            summary=f"{spec.id}: preview approval (dry run)",
        )
        step.approval = ApprovalState(
            approval_id=0,
            status=preview.outcome,
            risk=spec.risk,
            expires_at=f"{timeout.total_seconds():g}s",  # a dry run's request never expires: its timeout, as set
            approvers=preview.approvers,
            policy=preview.policy,
            decided_by="dry run",
            channel="dry-run",
            comment=preview.reason,
        )
        step.status = "running"
        return True

    async def _request(
        self, spec: StepSpec, step: StepState, expires_at: datetime
    ) -> tuple[ApprovalTicket, ApprovalState]:
        """Record the request; the approval as it stands then (pending, or decided by a policy). An abort that
        came while it was being recorded is raised once the approval is closed."""
        self._requesting.add(spec.id)
        try:
            ticket, aborted = await self._to_the_end(
                workflow.execute_activity_method(
                    ApprovalActivityDefs.request_approval,
                    self._request_input(spec, step, expires_at),
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
            changed_by=self._run.changed_by.get(spec.id),
        )
        if ticket.policy and ticket.status == "approved":
            approval.decided_by, approval.channel = f"policy:{ticket.policy}", "policy"
        elif ticket.status == "rejected":  # at once: the remediation budget is spent (state only, no command)
            approval.decided_by, approval.channel, approval.comment = ticket.decided_by, "policy", ticket.comment
        if aborted is not None:  # while the request was being recorded: its row must not wait for ever
            if approval.status == "pending":
                self._aborted(approval)
                await self._record_decision(spec, approval)
            raise aborted
        return ticket, approval

    def _request_input(self, spec: StepSpec, step: StepState, expires_at: datetime) -> ApprovalRequest:
        run = self._run
        # Approvers see what will run: placeholders filled in as the agent gets them.
        return ApprovalRequest(
            workflow_id=run.state.workflow_id,
            incident_id=run.state.incident_id,
            step_id=spec.id,
            run=step.runs,
            agent=spec.agent,
            action=run.render(spec.instructions) or f"run {spec.agent}",
            params=run.render(step.params),
            context_summary=self._context_summary(spec),
            risk=spec.risk,
            impact=run.render(spec.impact),
            expires_at=expires_at.isoformat(),
            incident_type=run.input.incident.incident_type,
            service=run.input.incident.service,
            changed_by=run.changed_by.get(spec.id),
        )

    async def _wait(self, spec: StepSpec, approval: ApprovalState, expires_at: datetime) -> None:
        """Until a decision, or the durable timer at expires_at (expired); then record how it ended."""
        outlive_abort = self._run.input.approvals_outlive_abort
        try:
            await workflow.wait_condition(
                lambda: approval.status != "pending",
                timeout=expires_at - workflow.now(),
                timeout_summary=f"approval of {spec.id} expires",
            )
        except TimeoutError:
            if approval.status == "pending" or not outlive_abort:
                approval.status, approval.decided_by = "expired", "timer"
                approval.decided_at, approval.channel = expires_at.isoformat(), "timer"
                self._origins.pop(approval.approval_id, None)
        except (asyncio.CancelledError, CancelledError):
            if approval.status == "pending" or not outlive_abort:
                self._aborted(approval)
            await self._record_decision(spec, approval)  # a decision taken in the same task is kept
            raise
        await self._record_decision(spec, approval)

    async def _notify(self, spec: StepSpec, approval_id: int, channel: str, kind: str = "request") -> None:
        try:
            await workflow.execute_activity_method(
                NotifyActivityDefs.notify_approval,
                NotifyApproval(approval_id=approval_id, channel=channel, kind=kind),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"{spec.id}: {'ask' if kind == 'request' else 'tell the outcome'} on {channel}",
            )
        except (ActivityError, asyncio.CancelledError, CancelledError) as err:
            workflow.logger.warning("approval %s: %s notification gave up: %s", approval_id, channel, err)

    def _aborted(self, approval: ApprovalState) -> None:
        approval.status, approval.decided_by, approval.decided_at = "rejected", "workflow", self._run.now()
        approval.channel, approval.comment = "workflow", "the workflow was aborted"
        self._origins.pop(approval.approval_id, None)  # no person decided it

    async def _to_the_end(self, activity: Awaitable[T]) -> tuple[T, BaseException | None]:
        """The activity's result, and the cancellation (an abort) that came while it ran, if any. With
        approvals_outlive_abort the activity is shielded: the step's cancellation waits for its end instead of
        cancelling it (an approval's record, half written or never started, would be pending for ever)."""
        if not self._run.input.approvals_outlive_abort:
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

    def _record_decision_activity(self, spec: StepSpec, approval: ApprovalState) -> Awaitable[bool]:
        run = self._run
        return workflow.execute_activity_method(
            ApprovalActivityDefs.record_approval_decision,
            ApprovalDecided(
                approval_id=approval.approval_id,
                workflow_id=run.state.workflow_id,
                incident_id=run.state.incident_id,
                step_id=spec.id,
                status=approval.status,
                decided_by=approval.decided_by or "unknown",
                decided_at=approval.decided_at or run.now(),
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
            output = self._run.step(dep).output or {}
            lines.append(f"{dep}: {output.get('summary') or self._run.step(dep).status}")
        return "\n".join(lines)[:4000]

    async def outcomes_told(self) -> None:
        """Wait for the channels being told how approvals ended (each gives up on its own)."""
        if self._outcomes:  # the workflow would otherwise close before they run
            await asyncio.gather(*self._outcomes)

    # ---- decisions (from the workflow's Update and signal handlers) -------------------------------

    def may_be_requesting(self, input: DecideApprovalInput) -> bool:
        """A step whose approval request is being recorded: its row may already be visible to the API (and a
        decision on its way) before the workflow has the request's id. Such a decision waits for it."""
        if input.decision not in ("approve", "reject"):
            return False
        return any(input.step_id in (None, step_id) for step_id in self._requesting)

    async def await_requests(self, input: DecideApprovalInput) -> None:
        await workflow.wait_condition(lambda: not self.may_be_requesting(input))

    def _shown(self, step: StepState) -> dict[str, Any]:
        """The step's params as the approver saw them: placeholders filled in (edits are checked against these)."""
        shown: dict[str, Any] = self._run.render(step.params)
        return shown

    def masked_problem(self, input: DecideApprovalInput) -> str | None:
        step, _ = self._pending_approval(input)
        if step is None or input.params is None or not isinstance(input.params, dict):
            return None
        return masked_problem(self._shown(step), input.params)

    def decision_problem(self, input: DecideApprovalInput) -> str | None:
        """Why this decision may not be taken (now, by this person), if it may not."""
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
            return modification_problem(self._shown(step), input.params)
        return None

    def decide(self, input: DecideApprovalInput) -> None:
        """Take a decision decision_problem found nothing against: the waiting gate goes on."""
        step, _ = self._pending_approval(input)
        assert step is not None and step.approval is not None
        approval = step.approval
        approval.status = "approved" if input.decision == "approve" else "rejected"
        approval.decided_by, approval.decided_at, approval.channel = input.actor, self._run.now(), input.channel
        approval.comment = input.comment or None
        edited = copy.deepcopy(input.params) if input.decision == "approve" else None
        # Values the approver sent back as the page showed them, redacted, are the step's real ones again.
        approval.modified_params = None if edited is None else unmask_params(self._shown(step), edited)
        self._origins[approval.approval_id] = input.origin or DecisionOrigin()  # none: the `temporal` CLI
        detail: dict[str, Any] = {"decision": approval.status, "channel": input.channel, "comment": input.comment}
        if edited is not None:
            detail["params"] = edited  # as sent
        self._run.change(input.actor, "decide_approval", step.step_id, detail)

    def _pending_approval(self, input: DecideApprovalInput) -> tuple[StepState | None, str | None]:
        steps = self._run.state.steps
        for step in steps:
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
            for s in steps
            if s.approval is not None
            and (input.approval_id in (None, s.approval.approval_id))
            and (input.step_id in (None, s.step_id))
        ]
        if decided:
            last = decided[-1]
            return None, f"{which} is already {last.status}" + (f" by {last.decided_by}" if last.decided_by else "")
        return None, f"no pending approval for {which}"


def _skip_reason(approval: ApprovalState) -> str:
    reason = f"approval {approval.status}" + (
        f" by {approval.decided_by}" if approval.status == "rejected" else f" at {approval.expires_at}"
    )
    if approval.comment:
        reason += f": {approval.comment}"
    return reason


def _approvers_text(approvers: dict[str, Any]) -> str:
    named = [*approvers.get("users", []), *(f"team {t}" for t in approvers.get("teams", []))]
    return ", ".join(named) if named else f"role {approvers.get('role') or 'approver'} or above"
