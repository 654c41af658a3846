"""The fault scenarios, each from the fault to the resolved incident on a ScenarioStack: break `shop`, let the
monitor open the incident, approve the restart through the API as an approver would, wait for the verified end.
Each returns an Outcome (timings from the fault, the cause an agent named, the action, side effects) that the
tests assert on and bench/scenarios.py prints as a table."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tests.factories import wait_for_workflow
from tests.scenarios.harness import WAIT_SECONDS, FaultProcess, ScenarioStack, eventually


@dataclass
class Outcome:
    scenario: str
    fault: str
    detected_s: float | None = None  # fault → incident opened by the monitor
    verified_s: float | None = None  # fault → the verify step passed
    cause: str | None = None  # the step output that named the cause ("step: summary"), if one did
    action: str = ""
    restarts: int = 0  # by the service's start counter, from the fault to the end
    incidents: int = 0
    status: str = ""  # the incident's, at the end
    workflow: str = ""  # completed | failed
    exit_code: int | None = None  # of the broken process, when the harness started it
    healthy_before_approval: bool | None = None
    timeline: list[str] = field(default_factory=list)  # the incident's own events (status moves, down, recovered)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # step id → status, output, approval

    def record(self) -> dict[str, Any]:
        """What the test artifacts keep (step outputs without their data, which can be long)."""
        record = asdict(self)
        record["steps"] = {
            step: {"status": s["status"], "summary": (s.get("output") or {}).get("summary")}
            for step, s in self.steps.items()
        }
        return record


def _seconds(at: str | None, since: float) -> float | None:
    return None if at is None else round(datetime.fromisoformat(at).timestamp() - since, 2)


def _cause(steps: dict[str, dict[str, Any]], named_by: list[tuple[str, str]]) -> str | None:
    """The first (step, pattern) whose step's summary matches: that step named the cause."""
    for step, pattern in named_by:
        summary = str((steps.get(step, {}).get("output") or {}).get("summary") or "")
        if re.search(pattern, summary, re.IGNORECASE):
            return f"{step}: {summary}"
    return None


def _action(steps: dict[str, dict[str, Any]]) -> str:
    restart = steps.get("restart") or {}
    approval = restart.get("approval") or {}
    data = (restart.get("output") or {}).get("data") or {}
    said = (data.get("stdout") or "").strip().splitlines()[-1:]
    decided = f"{approval.get('status')} by {approval.get('decided_by')}" if approval else "no approval"
    return f"restart ({decided}): exit {data.get('exit_code')}; {' '.join(said)}".strip()


async def respond(
    stack: ScenarioStack, service: FaultProcess, outcome: Outcome, fault_at: float, starts: int,
    named_by: list[tuple[str, str]],
) -> Outcome:  # fmt: skip
    """From the fault on: the monitor's incident, the approved restart, the verified end, what it took."""
    opened = await eventually(lambda: stack.incidents(service.name), f"the monitor to open {service.name}'s incident")
    incident = opened[0]
    outcome.detected_s = _seconds(incident["created_at"], fault_at)
    approval = await eventually(lambda: stack.pending_approval(incident["id"]), "the restart's approval request")
    outcome.healthy_before_approval = await service.healthy()
    await stack.approve(approval["id"], f"{outcome.scenario}: restart approved by the fault suite")
    ended, state = await asyncio.wait_for(wait_for_workflow(stack.temporal, incident["workflow_id"]), WAIT_SECONDS)
    outcome.workflow = ended
    if ended == "completed":
        await eventually(lambda: _resolved(stack, incident["id"]), "the incident to be resolved")
        await eventually(lambda: stack.monitored_up(service.name), f"the monitor to see {service.name} up again")
    outcome.steps = {s.step_id: asdict(s) for s in state.steps}
    verify = outcome.steps.get("verify", {})
    outcome.verified_s = _seconds(verify.get("finished_at"), fault_at) if verify.get("status") == "completed" else None
    outcome.cause = _cause(outcome.steps, named_by)
    outcome.action = _action(outcome.steps)
    outcome.restarts = service.starts - starts
    outcome.incidents = len(await stack.incidents(service.name))
    outcome.status = (await stack.incident(incident["id"]))["status"]
    outcome.timeline = await stack.incident_events(incident["id"])
    return outcome


async def _resolved(stack: ScenarioStack, incident_id: int) -> bool:
    return bool((await stack.incident(incident_id))["status"] == "resolved")


async def _steady(stack: ScenarioStack, name: str) -> tuple[FaultProcess, int]:
    """The service, once the monitor has seen it up, and its start count then."""
    await eventually(lambda: stack.monitored_up(name), f"the monitor to see {name} up")
    return stack.services[name], stack.services[name].starts


async def process_killed(stack: ScenarioStack) -> Outcome:
    """SIGKILL: no log line, nothing listening. The monitor's check names it (connection refused)."""
    shop, starts = await _steady(stack, "shop")
    fault_at = time.time()
    shop.kill()
    outcome = Outcome("process killed", "SIGKILL")
    return await respond(stack, shop, outcome, fault_at, starts, [("monitor", "refused"), ("metrics", r"\bup\b")])


async def error_spike(stack: ScenarioStack) -> Outcome:
    """Every answer a 500 and an ERROR line in the log, until a restart clears the bad state."""
    shop, starts = await _steady(stack, "shop")
    fault_at = time.time()
    await shop.fault("errors", clear_on_restart=True)
    outcome = Outcome("error spike", "500s + ERROR lines")
    return await respond(stack, shop, outcome, fault_at, starts, [("logs", "connection pool exhausted")])


async def oom_exit(stack: ScenarioStack) -> Outcome:
    """The process ends with status 137, as the OOM killer leaves it (a memory warning is its last line)."""
    shop, starts = await _steady(stack, "shop")
    fault_at = time.time()
    await shop.fault("oom")
    outcome = Outcome("OOM exit (137)", "exit 137")
    outcome.exit_code = await asyncio.to_thread(shop.first_exit)
    return await respond(stack, shop, outcome, fault_at, starts, [("logs", r"memory|\b137\b|oom"),
                                                                   ("metrics", r"memory|oom")])  # fmt: skip


SCENARIOS: dict[str, Callable[[ScenarioStack], Awaitable[Outcome]]] = {
    "process_killed": process_killed,
    "error_spike": error_spike,
    "oom_exit": oom_exit,
}
COLUMNS = ("scenario", "detected s", "cause named", "action", "verified s", "side effects")


def row(outcome: Outcome) -> tuple[str, ...]:
    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    cause = f"yes — {outcome.cause}" if outcome.cause else "no"
    effects = f"{outcome.restarts} restart(s), {outcome.incidents} incident(s), incident {outcome.status}"
    return (outcome.scenario, seconds(outcome.detected_s), cause, outcome.action, seconds(outcome.verified_s), effects)


def table(outcomes: list[Outcome], width: int = 60) -> str:
    """A plain-text table, each cell cut to `width` characters."""
    rows = [COLUMNS, *(tuple(c if len(c) <= width else c[: width - 1] + "…" for c in row(o)) for o in outcomes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
