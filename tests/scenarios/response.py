"""The moves the fault scenarios share on a ScenarioStack: wait for a service to be steady, for the monitor's incident,
for its run to end or to wait for a person; approve the restart and follow it to the verified end; and write down
what it took (the Outcome's steps, cause, action, restarts, incidents, status and timeline)."""

from __future__ import annotations

import re
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from tests.scenarios.harness import WAIT_SECONDS, FaultProcess, ScenarioStack, eventually
from tests.scenarios.outcome import Outcome, seconds_since

ENDED = ("completed", "failed", "cancelled")


async def steady(stack: ScenarioStack, name: str) -> tuple[FaultProcess, int]:
    """The service, once the monitor has seen it up, and its start count then."""
    await eventually(lambda: stack.monitored_up(name), f"the monitor to see {name} up")
    return stack.services[name], stack.services[name].starts


async def first_incident(stack: ScenarioStack, service: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
    """The service's first incident, once the monitor has opened it."""
    opened = await eventually(lambda: stack.incidents(service), f"the monitor to open {service}'s incident", timeout)
    first: dict[str, Any] = opened[0]
    return first


async def detected(stack: ScenarioStack, service: str, outcome: Outcome, fault_at: float) -> dict[str, Any]:
    """The service's first incident, once the monitor has opened it; the time that took goes into the outcome."""
    incident = await first_incident(stack, service)
    outcome.detected_s = seconds_since(incident["created_at"], fault_at)
    return incident


async def requested(stack: ScenarioStack, incident_id: int) -> dict[str, Any]:
    """The incident's pending approval request (the restart's), once it is there."""
    approval: dict[str, Any] = await eventually(
        lambda: stack.pending_approval(incident_id), "the restart's approval request"
    )
    return approval


async def settled(stack: ScenarioStack, workflow_id: str, timeout: float = WAIT_SECONDS) -> tuple[str, dict[str, Any]]:
    """Wait until the run has completed, or failed: ("completed" | "failed" | "cancelled", its state), or "halted"
    for a failed run that still waits for a person (retry_step or abort, RETRY_WINDOW_SECONDS)."""

    async def done() -> dict[str, Any] | None:
        state = await stack.workflow(workflow_id)
        return state if state["status"] in ENDED else None

    state = await eventually(done, f"{workflow_id} to complete or fail", timeout)
    if state["status"] == "failed":
        described = await stack.temporal.get_workflow_handle(workflow_id).describe()
        if described.status == WorkflowExecutionStatus.RUNNING:
            return "halted", state
    return state["status"], state


async def resolved(stack: ScenarioStack, incident_id: int) -> bool:
    return bool((await stack.incident(incident_id))["status"] == "resolved")


def step_map(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step_id"]: step for step in state["steps"]}


def verified_s(steps: dict[str, dict[str, Any]], fault_at: float) -> float | None:
    """Seconds from the fault until the verify step passed (None: it did not)."""
    verify = steps.get("verify") or {}
    return seconds_since(verify.get("finished_at"), fault_at) if verify.get("status") == "completed" else None


def cause(steps: dict[str, dict[str, Any]], named_by: list[tuple[str, str]]) -> str | None:
    """The first (step, pattern) whose step's summary matches: that step named the cause."""
    for step, pattern in named_by:
        summary = str((steps.get(step, {}).get("output") or {}).get("summary") or "")
        if re.search(pattern, summary, re.IGNORECASE):
            return f"{step}: {summary}"
    return None


def action(steps: dict[str, dict[str, Any]]) -> str:
    """What became of the restart step: its approval, and what the command said, or why it did not run."""
    restart = steps.get("restart") or {}
    approval = restart.get("approval") or {}
    decided = f"{approval.get('status')} by {approval.get('decided_by') or 'nobody'}" if approval else "no approval"
    if restart.get("status") in ("skipped", "failed") and not restart.get("output"):
        why = restart.get("note") or restart.get("error") or ""
        return f"restart {restart['status']} ({decided}): {why}".strip()
    data = (restart.get("output") or {}).get("data") or {}
    said = (data.get("stdout") or "").strip().splitlines()[-1:]
    return f"restart ({decided}): exit {data.get('exit_code')}; {' '.join(said)}".strip()


async def conclude(
    stack: ScenarioStack, service: FaultProcess, outcome: Outcome, incident_id: int, state: dict[str, Any],
    fault_at: float, starts: int, named_by: list[tuple[str, str]],
) -> Outcome:  # fmt: skip
    """Write down what the scenario took: steps, verified s, cause, action, restarts, incidents, status, timeline."""
    outcome.steps = step_map(state)
    outcome.verified_s = verified_s(outcome.steps, fault_at)
    outcome.cause = cause(outcome.steps, named_by)
    outcome.action = outcome.action or action(outcome.steps)
    outcome.restarts = service.starts - starts
    outcome.incidents = len(await stack.incidents(service.name))
    outcome.status = (await stack.incident(incident_id))["status"]
    outcome.timeline = await stack.incident_events(incident_id)
    return outcome


async def respond(
    stack: ScenarioStack, service: FaultProcess, outcome: Outcome, fault_at: float, starts: int,
    named_by: list[tuple[str, str]],
) -> Outcome:  # fmt: skip
    """From the fault on: the monitor's incident, the approved restart, the verified end, what it took."""
    incident = await detected(stack, service.name, outcome, fault_at)
    approval = await requested(stack, incident["id"])
    outcome.healthy_before_approval = await service.healthy()
    await stack.approve(approval["id"], f"{outcome.scenario}: restart approved by the fault suite")
    outcome.workflow, state = await settled(stack, incident["workflow_id"])
    if outcome.workflow == "completed":
        await eventually(lambda: resolved(stack, incident["id"]), "the incident to be resolved")
        await eventually(lambda: stack.monitored_up(service.name), f"the monitor to see {service.name} up again")
    return await conclude(stack, service, outcome, incident["id"], state, fault_at, starts, named_by)


async def escalated(stack: ScenarioStack, incident_id: int, outcome: Outcome) -> dict[str, Any]:
    """Wait for the incident's first escalation; note it in the outcome (and its facts)."""

    async def first() -> dict[str, Any] | None:
        found = await stack.timeline(incident_id, "incident.escalated")
        return found[0]["data"] if found else None

    level: dict[str, Any] = await eventually(first, f"incident {incident_id} to escalate")
    outcome.facts["escalation"] = level
    outcome.facts["severity"] = (await stack.incident(incident_id))["severity"]
    outcome.notes.append(f"escalated {level.get('previous_severity')} → {level.get('severity')}")
    return level
