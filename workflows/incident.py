"""IncidentWorkflow: one per incident, runs the playbook's agents as activities and projects its state."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.payloads import (
        AgentInput,
        AgentResult,
        IncidentWorkflowInput,
        RecordStepInput,
        RecordWorkflowInput,
        StepState,
        WorkflowState,
    )
    from core.playbooks import DEFAULT_CHAIN

AGENT_TIMEOUT = timedelta(minutes=2)
AGENT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
PROJECTION_TIMEOUT = timedelta(seconds=30)
PROJECTION_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)


@workflow.defn(name="IncidentWorkflow")
class IncidentWorkflow:
    @workflow.init
    def __init__(self, input: IncidentWorkflowInput) -> None:
        self._seq = 0
        self._chain = DEFAULT_CHAIN
        self._state = WorkflowState(
            workflow_id=workflow.info().workflow_id,
            incident_id=input.incident.incident_id,
            playbook_id=input.playbook_id,
            status="pending",
            current_steps=[],
            steps=[
                StepState(step_id=s.step_id, agent=s.agent, position=i) for i, s in enumerate(self._chain)
            ],
        )

    @workflow.query(name="status")
    def status(self) -> WorkflowState:
        """Live state: workflow status, current step(s), per-step status and output."""
        return self._state

    @workflow.run
    async def run(self, input: IncidentWorkflowInput) -> WorkflowState:
        self._state.status = "in_progress"
        self._state.started_at = self._now()
        await self._record_workflow()

        previous_output: dict | None = None
        for definition, step in zip(self._chain, self._state.steps, strict=True):
            result = await self._run_step(input, step, previous_output)
            if result is None or (definition.fail_on_negative and not result.ok):
                self._state.status = "failed"
                self._state.error = f"step {step.step_id} failed: {step.error or (result and result.summary)}"
                break
            previous_output = asdict(result)
        else:
            self._state.status = "completed"

        for step in self._state.steps:
            if step.status == "pending":
                step.status = "skipped"
                await self._record_step(step)
        self._state.current_steps = []
        self._state.finished_at = self._now()
        await self._record_workflow()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._state.status == "failed":
            # Failed in the Temporal UI and `temporal workflow list` too, not just in our tables.
            raise ApplicationError(
                self._state.error or "incident workflow failed", type="IncidentFailed", non_retryable=True
            )
        return self._state

    async def _run_step(
        self, input: IncidentWorkflowInput, step: StepState, previous_output: dict | None
    ) -> AgentResult | None:
        step.status = "running"
        step.started_at = self._now()
        self._state.current_steps = [step.step_id]
        agent_input = AgentInput(
            incident=input.incident,
            workflow_id=self._state.workflow_id,
            step_id=step.step_id,
            previous_agent_output=previous_output,
        )
        await self._record_step(step, input=asdict(agent_input))
        definition = self._chain[step.position]
        checks = max(1, input.recheck_count) if definition.recheck else 1
        for check in range(1, checks + 1):
            try:
                result = await workflow.execute_activity(
                    step.agent,
                    agent_input,
                    result_type=AgentResult,
                    start_to_close_timeout=AGENT_TIMEOUT,
                    retry_policy=AGENT_RETRY,
                )
            except ActivityError as err:
                step.status = "failed"
                step.error = str(err.cause or err)
                step.finished_at = self._now()
                await self._record_step(step)
                return None
            if definition.recheck:
                result.data["checks"] = {"done": check, "allowed": checks}
            if result.ok or check == checks:
                break
            step.output = asdict(result)
            await self._record_step(step)
            await workflow.sleep(
                timedelta(seconds=input.recheck_interval_seconds),
                summary=f"{step.step_id}: check {check}/{checks} negative, re-checking",
            )
        step.attempt = int(result.data.get("attempt", 1))
        step.output = asdict(result)
        step.status = "completed" if result.ok or not self._fails_on_negative(step) else "failed"
        if step.status == "failed":
            step.error = result.summary
        step.finished_at = self._now()
        await self._record_step(step)
        return result

    def _fails_on_negative(self, step: StepState) -> bool:
        return self._chain[step.position].fail_on_negative

    def _now(self) -> str:
        return workflow.now().isoformat()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _record_workflow(self) -> None:
        await workflow.execute_local_activity(
            "record_workflow",
            RecordWorkflowInput(state=self._state, seq=self._next_seq()),
            start_to_close_timeout=PROJECTION_TIMEOUT,
            retry_policy=PROJECTION_RETRY,
        )

    async def _record_step(self, step: StepState, input: dict | None = None) -> None:
        await workflow.execute_local_activity(
            "record_step",
            RecordStepInput(
                workflow_id=self._state.workflow_id, step=step, seq=self._next_seq(), input=input
            ),
            start_to_close_timeout=PROJECTION_TIMEOUT,
            retry_policy=PROJECTION_RETRY,
        )
