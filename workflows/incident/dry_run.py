"""PlaybookDryRunWorkflow: a playbook run in simulation mode, on the incident workflow's own engine.

The same scheduler, step runner, approval gate and projection writer as IncidentWorkflow (joins, `when`,
depends_on, repeat, on_failure behave the same), over a run marked as a dry run (IncidentRun.dry_run_id), so that:
agents go through `simulate_agent` (run only if they declare `simulation="read"`, described otherwise), approvals
through `preview_approval` (nobody asked, nothing waits; the run goes on as if approved), and the state is written
to the dry run's `playbook_dry_runs` row by `record_dry_run`. It is started with no retry window and no escalation,
so a failed step ends it at once. Its own workflow type keeps it apart from incidents in Temporal
(`WorkflowType = "PlaybookDryRunWorkflow"`), and a new type leaves every IncidentWorkflow history as it was.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.dry_run import DRY_RUN_WORKFLOW, DryRunInput
    from core.payloads import WorkflowState
    from workflows.incident.state import IncidentRun
    from workflows.incident.workflow import IncidentWorkflow


@workflow.defn(name=DRY_RUN_WORKFLOW, sandboxed=False)
class PlaybookDryRunWorkflow(IncidentWorkflow):
    @workflow.init
    def __init__(self, input: DryRunInput) -> None:  # its own input: the run and its row
        self._own(IncidentRun(input.run, dry_run_id=input.dry_run_id))

    @workflow.run
    async def run(self, _input: DryRunInput) -> WorkflowState:  # type: ignore[override]
        return await self._run_playbook()
