"""The escalation timers of one wait for a person: each level of the incident type's policy (pinned in the run's
input) fires `after_seconds` after the run started waiting, through the escalate_incident activity, until a
person acknowledges the incident (the activity says so) or the wait ends (the task is cancelled)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from core.activity_defs import EscalationActivityDefs
    from core.payloads import EscalateInput
    from workflows.incident.approval_gate import NOTIFY_RETRY
    from workflows.incident.state import IncidentRun

ESCALATE_TIMEOUT = timedelta(seconds=60)


async def escalate(run: IncidentRun, reason: str) -> None:
    """Fire the levels in turn; stop early when one finds the incident acknowledged or ended."""
    started = workflow.now()
    for number, level in enumerate(run.input.escalation, start=1):
        due = started + timedelta(seconds=float(level["after_seconds"]))
        if due > workflow.now():
            await workflow.sleep(due - workflow.now(), summary=f"escalation level {number}")
        input = EscalateInput(incident_id=run.state.incident_id, workflow_id=run.state.workflow_id, level=number,
                              policy=level, reason=reason)  # fmt: skip
        try:
            acted = await workflow.execute_activity_method(
                EscalationActivityDefs.escalate_incident,
                input,
                start_to_close_timeout=ESCALATE_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
                summary=f"escalation level {number}",
            )
        except ActivityError as err:  # its retries spent (a channel down for minutes): the next level still fires
            workflow.logger.warning("escalation level %s of %s failed: %s", number, run.state.workflow_id, err)
            continue
        if not acted:
            return
