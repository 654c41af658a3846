"""One incident's run, as IncidentWorkflow and the collaborators it owns (the step runner, the approval gate,
the projection writer) share it: the playbook as changed at run time, the scheduler's facts, the running steps'
tasks, the `status` query's WorkflowState, and the moves all of them make on it."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core import dag
    from core.payloads import DecisionOrigin, IncidentWorkflowInput, StepState, WorkflowState
    from core.playbook import Playbook, StepSpec, substitute
    from core.playbook_vars import variable_context
    from workflows.incident.projection_writer import ProjectionWriter


def new_step(spec: StepSpec, position: int) -> StepState:
    return StepState(step_id=spec.id, agent=spec.agent, position=position, params=msgspec.to_builtins(spec.params))


class IncidentRun:
    """Owned by the workflow, shared with its collaborators. `wake` tells the run loop to look again."""

    def __init__(self, input: IncidentWorkflowInput, dry_run_id: int | None = None) -> None:
        self.input = input
        # A playbook's dry run (PlaybookDryRunWorkflow): agents simulated, approvals previewed, the state written to
        # this playbook_dry_runs row instead of the incident's projection. None: an incident's run.
        self.dry_run_id = dry_run_id
        self.playbook = Playbook.model_validate(input.playbook)
        self.facts = {s.id: dag.StepFacts() for s in self.playbook.steps}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.wake = False
        self.changed_by: dict[str, str] = {}  # steps added or changed at run time, and by whom (guard_changes)
        self.change_origins: list[DecisionOrigin | None] = []  # beside state.changes: who, from where (audit)
        self.state = WorkflowState(
            workflow_id=workflow.info().workflow_id,
            incident_id=input.incident.incident_id,
            playbook_id=self.playbook.id,
            playbook_version=self.playbook.version,
            status="pending",
            current_steps=[],
            steps=[new_step(s, i) for i, s in enumerate(self.playbook.steps)],
            audits_changes=input.guard_changes,
        )
        self.projection = ProjectionWriter(self.state, self.change_origins, self.set_wake, dry_run_id)

    def step(self, step_id: str) -> StepState:
        for step in self.state.steps:
            if step.step_id == step_id:
                return step
        raise KeyError(step_id)

    def variables(self) -> dict[str, Any]:
        """What placeholders in a step's params, instructions and impact stand for: the playbook's variables
        (`${region}`, `${vars.region}`) and the incident's fields (`${incident.service}`); with the playbook's
        syntax 2, `{{…}}` reads the same context as the editor's preview (core/playbook_vars.py: `service_name`
        too)."""
        incident = msgspec.to_builtins(self.input.incident)
        if self.playbook.syntax >= 2:
            return variable_context(self.playbook, incident, {})
        values = self.playbook.variable_values()  # a playbook of shorthand strings: its `variables`, as always
        return {
            **values,
            **{f"vars.{k}": v for k, v in values.items()},
            **{f"incident.{k}": str(v) for k, v in incident.items()},
        }

    def render(self, value: Any) -> Any:
        """`value` with its placeholders filled in as the agent (and the approver) get it."""
        return substitute(value, self.variables(), self.playbook.syntax)

    def now(self) -> str:
        return workflow.now().isoformat()

    def set_wake(self) -> None:
        self.wake = True

    def note_running(self) -> None:
        """`current_steps`, from the steps' own status."""
        self.state.current_steps = [s.step_id for s in self.state.steps if s.status == "running"]

    def change(
        self, actor: str, kind: str, step_id: str | None, detail: dict[str, Any], origin: DecisionOrigin | None = None
    ) -> None:
        """Log a change made at run time (an Update, a signal, a decision) in the state."""
        self.state.changes.append({"at": self.now(), "actor": actor, "kind": kind, "step_id": step_id, **detail})
        if self.input.guard_changes:
            self.change_origins.append(origin)
        self.wake = True

    def changed(self, step_id: str, actor: str) -> None:
        """Mark a step added or changed at run time: its approval is a person's, and not this one's."""
        if self.input.guard_changes:
            self.changed_by[step_id] = actor

    async def settle(
        self,
        step_id: str,
        status: str,
        *,
        error: str | None = None,
        note: str | None = None,
        spreads: bool = False,
        recorded: bool = False,  # the agent activity already wrote this outcome
    ) -> None:
        """A step's end (or skip): in the state, in the scheduler's facts, and (unless recorded) projected."""
        step = self.step(step_id)
        step.status, step.error = status, error
        if note:
            step.note = note
        if status != "skipped" or step.started_at:
            step.finished_at = self.now()
        self.facts[step_id] = dag.StepFacts(status=status, skip_spreads=spreads)
        self.tasks.pop(step_id, None)
        self.note_running()
        self.wake = True
        if not recorded:
            await self.projection.record_step(step)

    async def refresh_status(self) -> None:
        """in_progress ⇄ waiting_approval as steps start and stop waiting for a decision."""
        if self.state.status not in ("in_progress", "waiting_approval"):
            return
        waiting = any(s.status == "waiting_approval" for s in self.state.steps)
        status = "waiting_approval" if waiting else "in_progress"
        if status != self.state.status:
            self.state.status = status
            self.note_running()
            await self.projection.record_workflow()
