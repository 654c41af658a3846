"""Engine overhead: incidents/s of IncidentWorkflow (4-step chain, no-op agents, projection into Postgres)
against a bare workflow running 4 no-op activities, on the same dev server in one run; plus the status of a
closed workflow: the raw `status` query (a replay) and GET /api/workflows/{id} (target p50 ≤ 5 ms).

    make bench            # or: python -m bench.engine --count 150 --rounds 5
Target: ratio ≥ 0.9, median of 5 rounds (issue 25; it was 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx
import psutil
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.registry import known_agents
from activities.runs import AgentRunLog
from app.main import create_app
from bench.baseline import BareChainWorkflow, bare_noop
from bench.local_stack import local_stack
from bench.machine import machine_line
from bench.monitoring import cpu_seconds, postmaster, temporal_server
from core.audit import SYSTEM
from core.db import make_engine
from core.payloads import IncidentContext, IncidentWorkflowInput, WorkflowState
from core.playbook import Playbook, StepSpec
from core.settings import Settings
from core.tables import IncidentCreate
from services.identity import create_token, create_user
from services.incidents.open import insert_incident
from worker.runner import incident_worker, tune_gc
from workflows.incident import IncidentWorkflow

R = TypeVar("R")
CONCURRENCY = 50
RATIO_TARGET = 0.9  # IncidentWorkflow against the bare workflow, median of the rounds (issue 25)
STATUS_P50_TARGET_MS = 5.0  # the status of a closed workflow through the API (issue 25)
NOOP_CHAIN = Playbook(
    id="bench",
    name="4 no-op steps",
    steps=[
        StepSpec(id="monitor", agent="noop"),
        StepSpec(id="investigate", agent="noop", depends_on=["monitor"]),
        StepSpec(id="remediate", agent="noop", depends_on=["investigate"]),
        StepSpec(id="verify", agent="noop", depends_on=["remediate"]),
    ],
)


async def bounded(coros, limit: int = CONCURRENCY):
    semaphore = asyncio.Semaphore(limit)

    async def run(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def bare(env: WorkflowEnvironment, count: int) -> float:
    queue = f"bench-bare-{uuid.uuid4().hex}"
    async with Worker(env.client, task_queue=queue, workflows=[BareChainWorkflow], activities=[bare_noop]):
        started = time.perf_counter()
        await bounded(
            env.client.execute_workflow(BareChainWorkflow.run, "x", id=f"{queue}-{i}", task_queue=queue)
            for i in range(count)
        )
        return count / (time.perf_counter() - started)


def insert_incidents(engine, settings: Settings, count: int) -> list[tuple[int, str]]:
    """The incidents' rows, as opening them stores them (their workflows are started by `incidents`)."""
    ids = []
    with Session(engine) as session:
        for i in range(count):
            incident, _ = insert_incident(
                session=session,
                data=IncidentCreate(title=f"bench {i}", service="bench"),
                idempotency_key=None,
                actor=SYSTEM,
                settings=settings,
            )
            assert incident.id is not None and incident.workflow_id is not None
            ids.append((incident.id, incident.workflow_id))
    return ids


async def incidents(env: WorkflowEnvironment, engine, settings: Settings, ids: list[tuple[int, str]]) -> float:
    """Incidents/s of IncidentWorkflow over the stored incidents `ids`."""
    playbook = NOOP_CHAIN.model_dump(mode="json")
    async with incident_worker(env.client, engine, settings):
        started = time.perf_counter()
        await bounded(
            env.client.execute_workflow(
                IncidentWorkflow.run,
                IncidentWorkflowInput(
                    incident=IncidentContext(incident_id, f"bench {incident_id}", "bench", "P3"),
                    playbook=playbook,
                    known_agents=sorted(known_agents()),
                    retry_window_seconds=0,
                    agents_open_projection=settings.agents_open_projection,  # as services/incidents/open.py starts them
                    approvals_outlive_abort=True,
                ),
                id=workflow_id,
                task_queue=settings.task_queue,
            )
            for incident_id, workflow_id in ids
        )
        return len(ids) / (time.perf_counter() - started)


async def query_latency(
    env: WorkflowEnvironment, engine, settings: Settings, workflow_ids: list[str]
) -> tuple[list[float], list[float], list[float]]:
    """Latency of the status of closed workflows: the raw `status` query (the worker replays the history: the
    baseline) and GET /api/workflows/{id} (in-process ASGI, auth included; target p50 ≤ 5 ms); and GET /api/me, the
    floor of an authenticated API call (routing, the token's check, one row). The worker shares the event loop."""
    with Session(engine) as session:
        username = f"bench{uuid.uuid4().hex[:6]}"
        admin = create_user(session=session, actor=SYSTEM, username=username, role="admin", password=None)
        token, _ = create_token(session=session, actor=SYSTEM, user=admin, name="bench")
        session.commit()
    # As `agent-monitor web` makes it.
    web_engine = make_engine(settings.database_url.get_secret_value(), custom_plans=True)
    app = create_app(settings, engine=web_engine, temporal=env.client)
    app.state.credentials.start(web_engine)  # as the web's lifespan does: callers remembered while it listens
    while not app.state.credentials.listening:
        await asyncio.sleep(0.01)
    queries, api, floor = [], [], []
    async with (
        incident_worker(env.client, engine, settings),  # the query needs a worker to replay the history
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            headers={"Authorization": f"Bearer {token}"},
        ) as client,
    ):
        for workflow_id in workflow_ids:
            started = time.perf_counter()
            await env.client.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState)
            queries.append((time.perf_counter() - started) * 1000)
        # Then the API beside its floor, interleaved so a burst of load hits both: not right after each query, whose
        # replay's last activation the worker may still be finishing on the same loop.
        for workflow_id in workflow_ids:
            started = time.perf_counter()
            answer = await client.get(f"/api/workflows/{workflow_id}")
            api.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
            started = time.perf_counter()
            (await client.get("/api/me")).raise_for_status()
            floor.append((time.perf_counter() - started) * 1000)
    await app.state.credentials.close()
    web_engine.dispose()
    return queries, api, floor


class CpuMeter:
    """CPU seconds per process group: this process (the worker and the bench's client), the Temporal dev server,
    Postgres (its backends included)."""

    def __init__(self, engine) -> None:
        self._groups = {
            "Python": lambda: _own_cpu(),
            "Temporal": lambda: cpu_seconds([temporal_server()]),
            "Postgres": lambda: cpu_seconds([postmaster(engine)]),
        }

    def read(self) -> dict[str, float]:
        return {name: read() for name, read in self._groups.items()}


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def per_workflow(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """ms of CPU per workflow in each group."""
    return {name: (after[name] - before[name]) * 1000 / count for name in after}


@contextmanager
def records_off() -> Iterator[None]:
    """A diagnostic, never the product: the agents run without their per-step records (the context read and its
    snapshot, the agent_runs row, the step's row and event, the conversation message), to show what they cost."""
    original = AgentRunLog.around

    async def unrecorded(_self: AgentRunLog, _agent: str, _input: object, call: Callable[[], Awaitable[R]]) -> R:
        return await call()

    AgentRunLog.around = unrecorded  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        AgentRunLog.around = original  # type: ignore[method-assign]


async def main(count: int, rounds: int, without_records: bool) -> None:
    """Alternate bare and IncidentWorkflow rounds (after one warm-up round each) so a burst of load from
    anything else on the machine hits both; report each round and the median ratio, and where the CPU went."""
    tune_gc()  # as `agent-monitor worker` does; both workers run in this process, so both have it
    async with local_stack("bench", workflow_id_prefix=f"bench{uuid.uuid4().hex[:6]}-") as stack:
        env, engine, settings = stack.env, stack.engine, stack.settings
        meter = CpuMeter(engine)
        await bare(env, min(count, 50))
        await incidents(env, engine, settings, insert_incidents(engine, settings, min(count, 50)))
        pairs: list[tuple[float, float]] = []
        unrecorded: list[float] = []
        cpu: dict[str, list[dict[str, float]]] = {"bare": [], "ours": [], "unrecorded": []}
        workflow_ids: list[str] = []
        for _ in range(rounds):
            ids = insert_incidents(engine, settings, count)  # before the CPU is read: not the engine's work
            before = meter.read()
            raw = await bare(env, count)
            middle = meter.read()
            ours = await incidents(env, engine, settings, ids)
            after = meter.read()
            workflow_ids = [workflow_id for _, workflow_id in ids]
            pairs.append((raw, ours))
            cpu["bare"].append(per_workflow(before, middle, count))
            cpu["ours"].append(per_workflow(middle, after, count))
            if without_records:
                ids = insert_incidents(engine, settings, count)
                before = meter.read()
                with records_off():
                    unrecorded.append(await incidents(env, engine, settings, ids) / raw)
                cpu["unrecorded"].append(per_workflow(before, meter.read(), count))
        latencies, api_latencies, floor = await query_latency(env, engine, settings, workflow_ids[: min(100, count)])
    p50, p99 = _p50_p99(latencies)
    api_p50, api_p99 = _p50_p99(api_latencies)
    print(f"{rounds} rounds of {count} workflows each, {CONCURRENCY} at a time, in-memory dev server, one worker")
    for n, (raw, ours) in enumerate(pairs, 1):
        print(
            f"  round {n}: bare {raw:6.1f} workflows/s, "
            f"IncidentWorkflow {ours:6.1f} incidents/s, ratio {ours / raw:.2f}"
        )
    raw_median = statistics.median(raw for raw, _ in pairs)
    ours_median = statistics.median(ours for _, ours in pairs)
    ratio = statistics.median(ours / raw for raw, ours in pairs)
    print(f"bare workflow, 4 no-op activities:             {raw_median:7.1f} workflows/s (median)")
    print(f"IncidentWorkflow, 4 no-op agents + projection: {ours_median:7.1f} incidents/s (median)")
    met_ratio = "met" if ratio >= RATIO_TARGET else "NOT met"
    print(f"ratio: {ratio:.2f} median of the {rounds} rounds (target >= {RATIO_TARGET:g}: {met_ratio})")
    if unrecorded:
        median = statistics.median(unrecorded)
        print(
            f"diagnostic, IncidentWorkflow without the agents' per-step records: ratio {median:.2f} "
            f"(rounds {min(unrecorded):.2f}-{max(unrecorded):.2f})"
        )
    print_cpu(cpu)
    print(f"status query on a closed workflow (replays): p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(latencies)} queries)")
    met = "met" if api_p50 <= STATUS_P50_TARGET_MS else "NOT met"
    print(
        f"GET /api/workflows/{{id}}, closed: p50 {api_p50:.1f} ms, p99 {api_p99:.1f} ms "
        f"(target p50 <= {STATUS_P50_TARGET_MS:g} ms: {met}; {api_p50 / p50:.2f}x the raw query)"
    )
    floor_p50, floor_p99 = _p50_p99(floor)
    print(f"GET /api/me (the floor of an authenticated call): p50 {floor_p50:.1f} ms, p99 {floor_p99:.1f} ms")


def print_cpu(cpu: dict[str, list[dict[str, float]]]) -> None:
    """CPU per workflow by process, medians of the rounds. The machine's cores are shared: a workflow that costs
    more CPU anywhere leaves less for the rest, so the ratio follows the totals."""
    groups = list(cpu["bare"][0])
    print("CPU per workflow, ms, medians of the rounds (Python: this process, the worker and the bench's client):")
    print(f"  {'':18s}" + "".join(f"{g:>10s}" for g in [*groups, "total"]))
    for kind, label in (("bare", "bare workflow"), ("ours", "IncidentWorkflow"), ("unrecorded", "without records")):
        if not cpu[kind]:
            continue
        medians = [statistics.median(r[g] for r in cpu[kind]) for g in groups]
        total = statistics.median(sum(r.values()) for r in cpu[kind])
        print(f"  {label:18s}" + "".join(f"{m:10.1f}" for m in medians) + f"{total:10.1f}")


def _p50_p99(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), sorted(samples)[max(0, int(len(samples) * 0.99) - 1)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=150, help="workflows per round and kind")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--without-records",
        action="store_true",
        help="also run IncidentWorkflow with the agents' per-step records off in each round (a diagnostic: what "
        "they cost)",
    )
    args = parser.parse_args()
    print(machine_line(), flush=True)
    asyncio.run(main(args.count, args.rounds, args.without_records))
