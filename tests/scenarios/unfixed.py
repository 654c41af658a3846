"""Fault scenarios whose fix does not happen, where the incident must stay open and a person be told: an approval
nobody answers (it expires on time, across a worker restart, and nothing runs), a config error a restart cannot fix
(bounded attempts), and the worker SIGKILLed while the restart command runs (it ran once, and the run says the
outcome is unknown rather than running it again). The incident type escalates after ESCALATE_AFTER_S of waiting
for a person."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime

from tests.scenarios.faultstate import ROOT
from tests.scenarios.harness import ScenarioStack, eventually
from tests.scenarios.outcome import Outcome
from tests.scenarios.response import conclude, detected, escalated, requested, settled, steady

ESCALATE_AFTER_S = 2.0
ESCALATION = [{"after_seconds": ESCALATE_AFTER_S, "severity": "P1", "notify": []}]
APPROVAL_TIMEOUT_S = 4.0
UNFIXED_VERIFY_CHECKS = 3  # the config error's verify: fails after these checks, a second apart
SLOW_START_S = 4.0  # how long shop warms up before it listens: the restart command runs that long


async def approval_ignored(stack: ScenarioStack) -> Outcome:
    """shop killed; the restart's approval (timeout APPROVAL_TIMEOUT_S) gets no answer. The worker is SIGKILLed while
    it waits and started again only after the expiry: the approval expires at its time all the same, the restart
    step fails without running, the run waits for a person and the incident escalates."""
    await stack.escalation_policy(ESCALATION)
    await stack.change_playbook(restart={"approval_timeout_seconds": APPROVAL_TIMEOUT_S})
    shop, starts = await steady(stack, "shop")
    fault_at = time.time()
    shop.kill()
    outcome = Outcome("approval ignored", f"SIGKILL; nobody answers the approval ({APPROVAL_TIMEOUT_S:g} s)")
    incident = await detected(stack, shop.name, outcome, fault_at)
    request = await requested(stack, incident["id"])
    expires_at = datetime.fromisoformat(request["expires_at"]).timestamp()
    if stack.worker is not None:  # no worker while it expires: the expiry is the Temporal server's durable timer
        stack.worker.kill()
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 1)
        stack.worker.start()
    outcome.workflow, state = await settled(stack, incident["workflow_id"])
    await escalated(stack, incident["id"], outcome)
    await conclude(stack, shop, outcome, incident["id"], state, fault_at, starts, [("monitor", "refused")])
    outcome.facts["approval"] = await stack.approval(request["id"])
    outcome.facts["worker_starts"] = stack.worker.started if stack.worker else 0
    if stack.worker is not None:
        outcome.notes.append("worker down through the expiry")
    return outcome


async def config_error(stack: ScenarioStack) -> Outcome:
    """A config change that a restart cannot fix: a deploy restarts shop, which exits 78 at start-up ("config
    error" in its log) and stays down. The monitor's incident names it, the approver approves one restart, which
    fails the same way; verify fails after its checks, the run waits for a person and the incident escalates."""
    await stack.escalation_policy(ESCALATION)
    # shop never comes back, so verify's checks only set when it fails: 3 bound it as well as the playbook's 10.
    await stack.change_playbook(verify={"repeat": {"count": UNFIXED_VERIFY_CHECKS, "interval_seconds": 1}})
    shop, _ = await steady(stack, "shop")
    fault_at = time.time()
    await shop.fault("config", error="invalid setting POOL_SIZE=-1")
    deploy = [sys.executable, "-m", "tests.scenarios.faultservice", "restart", "--state-dir", str(shop.state_dir)]
    deployed = await asyncio.to_thread(subprocess.run, deploy, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert deployed.returncode == 1, deployed.stdout + deployed.stderr  # exited at start-up with status 78
    starts = shop.starts  # the deploy's start is the fault's; from here on, the product's
    outcome = Outcome("unfixable config error", "a deploy's restart exits 78: config error")
    incident = await detected(stack, shop.name, outcome, fault_at)
    approval = await requested(stack, incident["id"])
    outcome.facts["approval_context"] = approval["context_summary"]  # what the approver read before deciding
    await stack.approve(approval["id"], f"{outcome.scenario}: restart approved by the fault suite")
    outcome.workflow, state = await settled(stack, incident["workflow_id"])
    await escalated(stack, incident["id"], outcome)
    await conclude(stack, shop, outcome, incident["id"], state, fault_at, starts, [("logs", "config error")])
    checks = ((outcome.steps.get("verify") or {}).get("output") or {}).get("data", {}).get("checks")
    outcome.notes.append(f"verify failed after {checks['done'] if checks else '?'} checks")
    return outcome


async def worker_killed(stack: ScenarioStack) -> Outcome:
    """shop killed; the approved restart takes SLOW_START_S (shop warms up before it listens) and the worker is
    SIGKILLed meanwhile. A new worker picks the step up again (its heartbeat timed out), finds the command's intent
    without an outcome and fails the step rather than running it a second time: one start; the run waits for a
    person to check and decide, and the incident escalates."""
    await stack.escalation_policy(ESCALATION)
    await stack.change_playbook(restart={"heartbeat_seconds": 5})  # a dead worker's step is retried within 5 s
    shop, starts = await steady(stack, "shop")
    await shop.fault("slow_start", seconds=SLOW_START_S)  # read at start-up: the running shop is not slowed
    fault_at = time.time()
    shop.kill()
    outcome = Outcome("worker SIGKILL mid-restart", f"SIGKILL shop; its restart takes {SLOW_START_S:g} s")
    incident = await detected(stack, shop.name, outcome, fault_at)
    approval = await requested(stack, incident["id"])
    await stack.approve(approval["id"], f"{outcome.scenario}: restart approved by the fault suite")
    await eventually(lambda: shop.starts > starts, "the restart command to start shop", timeout=60)
    assert stack.worker is not None, "this scenario needs the worker in a process of its own"
    killed_at = time.time()
    outcome.facts["worker_exit"] = stack.worker.kill()
    outcome.facts["command_running_when_killed"] = not await shop.healthy()  # still warming up
    stack.worker.start()
    outcome.workflow, state = await settled(stack, incident["workflow_id"])
    await eventually(shop.healthy, "the restart the killed worker started to bring shop up")
    await escalated(stack, incident["id"], outcome)
    await conclude(stack, shop, outcome, incident["id"], state, fault_at, starts, [("monitor", "refused")])
    outcome.facts["killed_s"] = round(killed_at - fault_at, 2)
    outcome.facts["starts_in_log"] = _starts_logged(shop.log.read_text(), fault_at)
    outcome.notes.append(f"worker SIGKILLed {killed_at - fault_at:.1f} s after the fault")
    return outcome


def _starts_logged(log: str, since: float) -> list[str]:
    """The service's "starting" lines written after `since`."""
    found = []
    for line in log.splitlines():
        stamp, _, rest = line.partition(" ")
        if " starting (start #" in rest and datetime.fromisoformat(stamp).timestamp() >= since:
            found.append(rest)
    return found
