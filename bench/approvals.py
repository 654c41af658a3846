"""Approval decisions: from `POST /api/approvals/{id}/decision` to the workflow having taken the decision (the
Update returned: the gate resumed), against a bare workflow's Update round trip on the same dev server in
the same run. The incident worker is its own process (`agent-monitor worker`), as in production, so the
timed app does not share its event loop with the workflows it talks to.

    make bench            # or: python -m bench.approvals --count 100
Target: p99 <= 15 ms from the POST.
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

import httpx
from sqlmodel import Session, select
from temporalio.worker import Worker

from activities.incidents import insert_incident
from api.identity_service import create_token, create_user
from api.main import create_app
from bench.baseline import BareUpdateWorkflow
from bench.local_stack import local_stack
from core.approvals import Approval
from core.audit import SYSTEM
from core.payloads import DecideApprovalInput, IncidentContext, IncidentWorkflowInput
from core.tables import IncidentCreate

TARGET_P99_MS = 15.0
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


async def bare_updates(env, count: int) -> list[float]:
    queue = f"bench-upd-{uuid.uuid4().hex}"
    samples = []
    async with Worker(env.client, task_queue=queue, workflows=[BareUpdateWorkflow]):
        for i in range(count):
            handle = await env.client.start_workflow(BareUpdateWorkflow.run, "x", id=f"{queue}-{i}", task_queue=queue)
            await handle.query("__stack_trace")  # the run has started and waits
            started = time.perf_counter()
            await handle.execute_update(BareUpdateWorkflow.decide, "approve")
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def decisions(env, engine, settings, count: int) -> dict[str, list[float]]:
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
    samples: dict[str, list[float]] = {path: [] for path in paths}
    with worker_process(settings):
        for incident_id, title, workflow_id in incidents:
            await env.client.start_workflow(
                "IncidentWorkflow",
                IncidentWorkflowInput(
                    incident=IncidentContext(incident_id, title, "bench", "P3"),
                    playbook=GATED,
                    known_agents=["noop"],
                    retry_window_seconds=0,
                    agents_open_projection=settings.agents_open_projection,  # as activities/incidents.py starts them
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
                started = time.perf_counter()
                if path == "direct":
                    arg = DecideApprovalInput(decision="approve", approval_id=approval_id, actor="bench")
                    await handle.execute_update("decide_approval", arg)
                else:
                    answer = await client.post(f"/api/approvals/{approval_id}/decision", json={"decision": "approve"})
                    if answer.status_code != 200:
                        raise RuntimeError(f"decision refused: {answer.text}")
                samples[path].append((time.perf_counter() - started) * 1000)
                if path != "post-busy":
                    await handle.result()  # untimed: the incident's remaining steps end before the next decision
    return samples


@contextmanager
def worker_process(settings):
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TASK_QUEUE": settings.task_queue,
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker"], env=env)
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def main(count: int) -> None:
    async with local_stack("bench-approvals", workflow_id_prefix=f"ba{uuid.uuid4().hex[:6]}-") as stack:
        bare = await bare_updates(stack.env, count)
        ours = await decisions(stack.env, stack.engine, stack.settings, count)
    print(f"{count} decisions per line, one at a time, in-memory dev server, the worker in its own process, the app")
    print("in-process; 'idle': the previous incident has ended (as the bare workflow ends in its decision's task)")
    for label, values in (
        ("bare workflow Update round trip", bare),
        ("decide_approval Update, no API, idle", ours["direct"]),
        ("POST decision → workflow took it, idle", ours["post"]),
        ("the same, back to back", ours["post-busy"]),
    ):
        print(f"{label:<40} p50 {statistics.median(values):6.1f} ms, p99 {pct(values, 99):6.1f} ms")
    ratio = statistics.median(ours["post"]) / statistics.median(bare)
    verdict = "met" if pct(ours["post"], 99) <= TARGET_P99_MS else "NOT met"
    print(f"POST (idle) against bare, ratio of medians: {ratio:.2f}; target p99 <= {TARGET_P99_MS:g} ms: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="decisions to time on each line")
    args = parser.parse_args()
    asyncio.run(main(args.count))
