"""The fault scenarios, each from the fault to its end on a ScenarioStack, and the catalogue of them that the fault
suite's tests and bench/scenarios.py run.

Here, the faults a restart fixes: break `shop`, let the monitor open the incident, approve the restart through the
API as an approver would, wait for the verified end. The others: outages.py (flapping, alert repeats, slow, a
dependency killed), unfixed.py (an approval nobody answers, a config error, the worker killed mid-restart) and
leaks.py (a secret in the log). Each returns an Outcome that the tests assert on and the table shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.scenarios import leaks, outages, unfixed
from tests.scenarios.harness import ScenarioStack
from tests.scenarios.outcome import Outcome
from tests.scenarios.response import respond, steady


async def process_killed(stack: ScenarioStack) -> Outcome:
    """SIGKILL: no log line, nothing listening. The monitor's check names it (connection refused)."""
    shop, starts = await steady(stack, "shop")
    fault_at = time.time()
    shop.kill()
    outcome = Outcome("process killed", "SIGKILL")
    return await respond(stack, shop, outcome, fault_at, starts, [("monitor", "refused"), ("metrics", r"\bup\b")])


async def error_spike(stack: ScenarioStack) -> Outcome:
    """Every answer a 500 and an ERROR line in the log, until a restart clears the bad state."""
    shop, starts = await steady(stack, "shop")
    fault_at = time.time()
    await shop.fault("errors", clear_on_restart=True)
    outcome = Outcome("error spike", "500s + ERROR lines")
    return await respond(stack, shop, outcome, fault_at, starts, [("logs", "connection pool exhausted")])


async def oom_exit(stack: ScenarioStack) -> Outcome:
    """The process ends with status 137, as the OOM killer leaves it (a memory warning is its last line)."""
    shop, starts = await steady(stack, "shop")
    fault_at = time.time()
    await shop.fault("oom")
    outcome = Outcome("OOM exit (137)", "exit 137")
    outcome.exit_code = await asyncio.to_thread(shop.first_exit)
    return await respond(stack, shop, outcome, fault_at, starts, [("logs", r"memory|\b137\b|oom"),
                                                                   ("metrics", r"memory|oom")])  # fmt: skip


Play = Callable[[str], Awaitable[Outcome]]  # the fault suite's `play` fixture: run a scenario by its name


@dataclass(frozen=True)
class Scenario:
    """A scenario and what bench/scenarios.py expects of it (its test asserts much more)."""

    run: Callable[[ScenarioStack], Awaitable[Outcome]]
    status: str = "resolved"  # the incident's at the end ("": none opened)
    restarts: tuple[int, int] = (1, 1)  # at least, at most (the service's start counter, from the fault on)
    incidents: int = 1
    timed: bool = True  # held to the detection and verification targets
    worker_process: bool = False  # the worker runs as a process of its own (to be killed)


SCENARIOS: dict[str, Scenario] = {
    "process_killed": Scenario(process_killed),
    "error_spike": Scenario(error_spike),
    "oom_exit": Scenario(oom_exit),
    "dependency_killed": Scenario(outages.dependency_killed, incidents=2),
    "flapping": Scenario(outages.flapping, status="in_progress", restarts=(1, 3), timed=False),
    "alert_repeats": Scenario(outages.alert_repeats, restarts=(0, 0), timed=False),
    "slow_degraded": Scenario(outages.slow_degraded, status="", restarts=(0, 0), incidents=0, timed=False),
    "secret_in_log": Scenario(leaks.secret_in_log),
    "approval_ignored": Scenario(unfixed.approval_ignored, status="in_progress", restarts=(0, 0), timed=False,
                                 worker_process=True),
    "config_error": Scenario(unfixed.config_error, status="in_progress", timed=False),
    "worker_killed": Scenario(unfixed.worker_killed, status="in_progress", timed=False, worker_process=True),
}  # fmt: skip


def verdict(scenario: Scenario, outcome: Outcome, detected_s: float, verified_s: float) -> list[str]:
    """What in the outcome is not as the scenario expects (bench/scenarios.py prints it)."""
    problems = []
    if outcome.status != scenario.status:
        problems.append(f"incident {outcome.status or 'not opened'}")
    low, high = scenario.restarts
    if not low <= outcome.restarts <= high or outcome.incidents != scenario.incidents:
        problems.append(f"{outcome.restarts} restarts, {outcome.incidents} incidents")
    if scenario.timed and (outcome.detected_s is None or outcome.detected_s > detected_s):
        problems.append(f"detected after {outcome.detected_s} s")
    if scenario.timed and (outcome.verified_s is None or outcome.verified_s > verified_s):
        problems.append(f"verified after {outcome.verified_s} s")
    return problems
