"""Approval decisions, from `POST /api/approvals/{id}/decision`: to the workflow resuming with the decision, and
to the answer, against a bare workflow's Update on the same dev server in the same run. Each worker (ours:
`agent-monitor worker`; the bare one: bench/bare_worker.py) is a process of its own, as in production, so
the timed client shares its event loop with neither.

"Resumed" is the start of the workflow task in which the workflow takes the decision: `workflow.now()`
there, which the workflow stores as the approval's `decided_at` (the bare workflow returns it), against the
wall clock when the request was sent; the dev server and this process share the machine's clock. The answer
comes once the worker has finished that task and the server has persisted it.

    make bench            # or: python -m bench.approvals --count 100
Targets: p99 <= 15 ms from the POST to the workflow resuming; and (issue 25) that p99 at most 2x the bare Update's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlmodel import Session, select

from app.main import create_app
from bench.bare_worker import bare_worker
from bench.baseline import BareUpdateWorkflow
from bench.local_stack import local_stack, stop_process
from bench.machine import machine_line
from core.approvals import Approval
from core.audit import SYSTEM
from core.payloads import DecideApprovalInput, IncidentContext, IncidentWorkflowInput, WorkflowState
from core.tables import IncidentCreate
from services.identity import create_token, create_user
from services.incidents.open import insert_incident

TARGET_P99_MS = 15.0
TARGET_RATIO = 2.0  # issue 25: the POST's p99 to the workflow resuming, against the bare Update's p99
GATED = {
    "id": "bench-gated",
    "name": "gated",
    "steps": [
        {"id": "monitor", "agent": "noop"},
        {"id": "remediate", "agent": "noop", "depends_on": ["monitor"], "requires_approval": True},
    ],
}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class Samples:
    """Per decision, in ms: from sending it to the workflow resuming with it, and to its answer."""

    resumed: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)

    def add(self, sent: float, resumed_at: str, answered: float) -> None:
        self.resumed.append((datetime.fromisoformat(resumed_at).timestamp() - sent) * 1000)
        self.answered.append((answered - sent) * 1000)


async def bare_updates(env, count: int) -> Samples:
    queue = f"bench-upd-{uuid.uuid4().hex}"
    samples = Samples()
    with bare_worker(env.client.service_client.config.target_host, queue):  # its own process, as ours
        # All started first and waiting, then decided one at a time, as our incidents are: a workflow started and
        # queried right before its Update would be hot in the server's and the worker's caches, ours are not.
        handles = [
            await env.client.start_workflow(BareUpdateWorkflow.run, "x", id=f"{queue}-{i}", task_queue=queue)
            for i in range(count)
        ]
        for handle in handles:
            await handle.query("__stack_trace")  # the run has started and waits
        for handle in handles:
            sent = time.time()
            resumed_at = await handle.execute_update(BareUpdateWorkflow.decide, "approve")
            samples.add(sent, resumed_at, time.time())
    return samples


async def decisions(env, engine, settings, count: int) -> dict[str, Samples]:
    """Per path, `count` decisions: the POST through the API and the same Update sent straight to the
    workflow, each on an idle worker (the previous incident has ended, as the bare workflow ends in its
    decision's task), and POSTs back to back (the previous incident's remaining steps still run)."""
    paths = ("direct", "post", "post-busy")
    with Session(engine) as session:
        user = create_user(session=session, actor=SYSTEM, username="bench-approver", role="approver", password=None)
        token, _ = create_token(session=session, actor=SYSTEM, user=user, name="bench")
        incidents = []
        for i in range(count * len(paths)):
            incident, _ = insert_incident(session=session, data=IncidentCreate(title=f"bench {i}", service="bench"),
                                          idempotency_key=None, actor=SYSTEM, settings=settings)  # fmt: skip
            incidents.append((incident.id, incident.title, incident.workflow_id))
    app = create_app(settings, engine=engine, temporal=env.client)
    samples = {path: Samples() for path in paths}
    with worker_process(settings):
        for incident_id, title, workflow_id in incidents:
            await env.client.start_workflow(
                "IncidentWorkflow",
                IncidentWorkflowInput(
                    incident=IncidentContext(incident_id, title, "bench", "P3"),
                    playbook=GATED,
                    known_agents=["noop"],
                    retry_window_seconds=0,
                    agents_open_projection=settings.agents_open_projection,  # as services/incidents/open.py starts them
                    approvals_outlive_abort=True,
                ),
                id=workflow_id,
                task_queue=settings.task_queue,
            )
        while True:  # every request recorded and waiting
            with Session(engine) as session:
                waiting = session.exec(
                    select(Approval.id, Approval.workflow_id).where(Approval.status == "pending").order_by(Approval.id)
                ).all()
            if len(waiting) == len(incidents):
                break
            await asyncio.sleep(0.1)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client:
            await client.get("/api/approvals")  # warm the app
            for n, (approval_id, workflow_id) in enumerate(waiting):
                path = paths[n % 2] if n < 2 * count else "post-busy"
                handle = env.client.get_workflow_handle(workflow_id)
                sent = time.time()
                if path == "direct":
                    arg = DecideApprovalInput(decision="approve", approval_id=approval_id, actor="bench")
                    state = await handle.execute_update("decide_approval", arg, result_type=WorkflowState)
                    [decided_at] = [s.approval.decided_at for s in state.steps if s.approval is not None]
                else:
                    answer = await client.post(f"/api/approvals/{approval_id}/decision", json={"decision": "approve"})
                    if answer.status_code != 200:
                        raise RuntimeError(f"decision refused: {answer.text}")
                    decided_at = answer.json()["decided_at"]
                samples[path].add(sent, decided_at, time.time())
                if path != "post-busy":
                    await handle.result()  # untimed: the incident's remaining steps end before the next decision
        # The worker stops only once every incident has ended (stopping it cancels the activities it runs).
        await asyncio.gather(*(env.client.get_workflow_handle(workflow_id).result() for _, workflow_id in waiting))
    return samples


@contextmanager
def worker_process(settings):
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TASK_QUEUE": settings.task_queue,
        "LOG_LEVEL": "WARNING",
        "RECONCILE_INTERVAL_SECONDS": "0",  # it inserts rows and starts their workflows itself
    }
    worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=env)
    try:
        yield worker
    finally:
        stop_process(worker)


async def main(count: int) -> None:
    async with local_stack("bench-approvals", workflow_id_prefix=f"ba{uuid.uuid4().hex[:6]}-") as stack:
        bare = await bare_updates(stack.env, count)
        ours = await decisions(stack.env, stack.engine, stack.settings, count)
    print(f"{count} decisions per line, one at a time, in-memory dev server, each worker in its own process, the")
    print("app in-process; 'idle': the previous incident has ended (as the bare workflow ends in its decision's task)")
    print(f"{'':<40} {'to the workflow resuming':<27} to the answer")
    for label, line in (
        ("bare workflow Update", bare),
        ("decide_approval Update, no API, idle", ours["direct"]),
        ("POST decision, idle", ours["post"]),
        ("the same, back to back", ours["post-busy"]),
    ):
        print(f"{label:<40} {figures(line.resumed):<27} {figures(line.answered)}")
    post = ours["post"]
    ratio = statistics.median(post.answered) / statistics.median(bare.answered)
    verdict = "met" if pct(post.resumed, 99) <= TARGET_P99_MS else "NOT met"
    print(f"POST (idle) against the bare Update, ratio of medians to the answer: {ratio:.2f}")
    print(f"target p99 <= {TARGET_P99_MS:g} ms from the POST to the workflow resuming: {verdict}")
    ours99, bare99 = pct(post.resumed, 99), pct(bare.resumed, 99)
    verdict = "met" if ours99 <= TARGET_RATIO * bare99 else "NOT met"
    print(
        f"target p99 to resuming <= {TARGET_RATIO:g}x the bare Update's: {ours99:.1f} ms against {bare99:.1f} ms "
        f"({ours99 / bare99:.2f}x): {verdict}"
    )


def figures(values: list[float]) -> str:
    return f"p50 {statistics.median(values):5.1f}, p99 {pct(values, 99):5.1f} ms"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="decisions to time on each line")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    asyncio.run(main(args.count))
