"""Scale-out on one machine (issue 20): 2 `agent-monitor worker`, 2 `agent-monitor web` and an `agent-monitor
indexer` as real processes against one Temporal dev server and one Postgres, configured only through the
environment as README's "Scaling out" says (bench/procs.py). Incidents are opened over both web processes while
one worker is SIGKILLed: every incident completes once, its remediation webhook reaches the receiver under one
webhook-id, SSE clients on each web process see every event of every incident (LISTEN/NOTIFY fans out to both),
and the service monitors run once per shard, not once per worker. Then the fault suite's CI rounds
(bench/faults.py CI_FAULTS), fewer incidents than `python -m bench.faults`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from temporalio.client import Client

from bench.faults import CI_FAULTS, RoundResult, detail, run_round, table
from bench.procs import ScaleStack, scale_stack
from bench.workload import Receiver, SseRecorder, playbook, receiver, set_up
from core.converter import DATA_CONVERTER

# Sized for a busy 2-core machine (about 2 minutes in all); the limits are far above it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

INCIDENTS = 80
CI_ROUND_INCIDENTS = 30  # per fault round; bench.faults runs 1,000
CI_OUTAGE_SECONDS = 5.0
SERVICES = ("alpha", "beta", "gamma", "delta")
INTERVAL = 2.0  # seconds between checks of each monitored service
STEADY_SECONDS = 6.0  # 3 checks a service (±1): a second monitor on a shard would double it
MONITORS = ["service-monitor-1of2", "service-monitor-2of2"]
# A check lost with a SIGKILLed worker is tried again once its attempt times out, so the playbook's check timeout
# (bench.workload's 30 s) bounded the kill round's drain. 15 s is still three times the check's own HTTP timeout
# (CHECK_TIMEOUT_SECONDS, 5 s).
CHECK_STEP_TIMEOUT = 15


@dataclass
class Scaled:
    stack: ScaleStack
    peer: Receiver
    recorders: list[SseRecorder]
    rounds: list[RoundResult] = field(default_factory=list)  # what the SSE test checks


@pytest.fixture(scope="module")
async def scaled() -> AsyncIterator[Scaled]:
    with (
        receiver(hook_delay=0.3) as peer,  # remediations in flight when the worker dies
        scale_stack(workers=2, webs=2, indexer=True, MONITOR_SHARDS="2", MONITOR_WINDOW_SECONDS="2") as stack,
    ):
        await set_up(stack.bases[0], stack.token, peer, SERVICES, INTERVAL)
        await shorter_check_timeout(stack, peer)
        recorders = [SseRecorder(base, stack.token) for base in stack.bases]  # one per web process
        for recorder in recorders:
            recorder.start()
        try:
            await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in recorders)), 60)
            yield Scaled(stack, peer, recorders)
        finally:
            for recorder in recorders:
                await recorder.stop()


async def shorter_check_timeout(stack: ScaleStack, peer: Receiver) -> None:
    """The workload's playbook again as its next version, its check step timing out after CHECK_STEP_TIMEOUT."""
    body = playbook(f"{peer.base}/hook")
    (check,) = [step for step in body["steps"] if step["id"] == "check"]
    check["timeout_seconds"] = CHECK_STEP_TIMEOUT
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.bases[0], headers=headers, timeout=60) as api:
        answer = await api.post("/api/playbooks", json={**body, "message": "a lost check is tried again sooner"})
    assert answer.status_code == 201 and answer.json()["version"] == 2, answer.text


async def monitors(stack: ScaleStack) -> list[str]:
    """The running ServiceMonitorWorkflows, once the workers have started them (visibility lags a little)."""
    client = await Client.connect(stack.temporal.address, data_converter=DATA_CONVERTER)
    query = 'WorkflowType = "ServiceMonitorWorkflow" AND ExecutionStatus = "Running"'
    deadline = time.monotonic() + 60
    while True:
        running = sorted([execution.id async for execution in client.list_workflows(query)])
        if len(running) >= len(MONITORS) or time.monotonic() > deadline:
            await asyncio.sleep(1)  # a third one would be listed by now
            return sorted([execution.id async for execution in client.list_workflows(query)])
        await asyncio.sleep(0.5)


async def checks_per_service(peer: Receiver, seconds: float) -> dict[str, int]:
    start = time.monotonic()
    await asyncio.sleep(seconds)
    return {name: peer.hits_between(name, start, start + seconds) for name in SERVICES}


def assert_round(result: RoundResult, incidents: int) -> None:
    led = result.ledger
    why = table([result]) + "\n" + detail(result)
    answers = dict(result.opened.statuses)
    if result.fault == "postgres-restart":  # while it is down nothing can be recorded: the client is told so
        assert set(answers) <= {201, 503} and answers.get(201, 0) >= incidents // 2, (answers, why)
    else:
        assert answers == {201: incidents}, (answers, why)
    # Whatever was recorded (answered 201 or not) completed by itself: no client retried anything.
    assert set(result.opened.ids) <= set(led.recorded), why
    assert led.stuck == [] and led.failed == 0 and led.completed == len(led.recorded), why
    # One IncidentWorkflow execution per incident, completed in Temporal as in the projection.
    assert len(led.runs) == len(led.recorded) and set(led.runs.values()) == {1}, why
    assert set(led.temporal_status.values()) == {"COMPLETED"}, led.temporal_status
    # The remediation acted once per incident (re-sends under the same webhook-id are the receiver's to drop).
    assert led.duplicated_effects == 0 and led.missing_effects == 0, why


async def test_two_workers_two_webs_one_worker_killed(scaled: Scaled) -> None:
    stack, peer = scaled.stack, scaled.peer

    # Monitors: one per shard whatever the number of workers, and each service checked once per interval.
    assert await monitors(stack) == MONITORS
    deadline = time.monotonic() + 60
    while not all(peer.hits_between(name, 0, time.monotonic()) for name in SERVICES):
        assert time.monotonic() < deadline, f"not every service was checked: {dict(peer.hits)}"
        await asyncio.sleep(0.2)
    expected = STEADY_SECONDS / INTERVAL
    checks = await checks_per_service(peer, STEADY_SECONDS)
    assert all(expected - 1 <= n <= expected + 1 for n in checks.values()), (checks, expected)

    # Incidents over both web processes; worker 1 SIGKILLed (its whole process group) when half are posted.
    killed_at: list[float] = []

    async def kill_worker() -> None:
        stack.workers[0].proc.kill()
        killed_at.append(time.monotonic())

    result = await run_round(
        stack, peer, scaled.recorders, "scale-out", INCIDENTS, faults={INCIDENTS // 2: kill_worker}
    )
    print("\n" + table([result]))
    scaled.rounds.append(result)
    assert killed_at and not stack.workers[0].proc.alive
    assert_round(result, INCIDENTS)

    # The monitors outlived the worker that ran one of them: both shards checked again, neither twice.
    assert await monitors(stack) == MONITORS
    deadline = time.monotonic() + 90
    while not all(peer.hits_between(name, killed_at[0] + 1, time.monotonic()) for name in SERVICES):
        assert time.monotonic() < deadline, "a shard was not checked again after its worker died"
        await asyncio.sleep(0.5)
    checks = await checks_per_service(peer, STEADY_SECONDS)
    assert all(expected - 1 <= n <= expected + 1 for n in checks.values()), (checks, expected)
    assert all(app.proc.alive for app in [*stack.webs, *stack.indexers, stack.workers[1]])
    stack.workers[0].start()  # the next test's stack is whole again


@pytest.mark.parametrize("fault", CI_FAULTS)
async def test_fault_round(scaled: Scaled, fault: str) -> None:
    """bench.faults' round for `fault` with fewer incidents: nothing lost, nothing acted twice, no event missed."""
    # 3 a second for 15 s: an outage at 5 s ends at 10 s, and incidents are still being opened after it.
    result = await run_round(
        scaled.stack, scaled.peer, scaled.recorders, fault, CI_ROUND_INCIDENTS, rate=3, outage=CI_OUTAGE_SECONDS
    )
    print("\n" + table([result]))
    scaled.rounds.append(result)
    assert_round(result, CI_ROUND_INCIDENTS)
    for app in scaled.stack.all_apps():
        assert app.proc.alive, f"{app.proc.name} is not running after the round"


async def test_sse_clients_on_each_web_process_saw_every_event(scaled: Scaled) -> None:
    """Every event of every incident of the rounds above reached the SSE client on each web process, whichever
    process (web or worker) wrote it: one LISTEN per web process, NOTIFY in the writer's transaction."""
    assert scaled.rounds, "the rounds above did not run"
    for result in scaled.rounds:
        assert result.events >= result.ledger.completed * 5  # created, workflow status, each step's
        missed = {f"web {n + 1}": sorted(m) for n, m in enumerate(result.missed) if m}
        assert missed == {}, f"{result.fault}: events never sent: {missed}\n{detail(result)}"
