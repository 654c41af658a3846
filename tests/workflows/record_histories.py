"""Record workflow histories for the replay test:
`python -m tests.workflows.record_histories [incidents|approvals|monitor|changes|rejected]`.

Re-record only on purpose: the point of the replay test is that a code change which would break running
incidents fails CI (use `workflow.patched()` for such changes instead).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
from sqlmodel import Session
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from app.main import create_app
from bench.local_stack import LocalStack, local_stack
from core.payloads import MonitorInput
from core.services import Service, ServiceBase
from tests.factories import make_user
from tests.peers import closed_port_url, http_service
from worker.runner import incident_worker
from workflows.monitor import ServiceMonitorWorkflow

HERE = Path(__file__).parent / "histories"


async def main(which: str) -> None:
    settings = {"verify_checks": 2, "verify_interval_seconds": 0.1, "retry_window_seconds": 0}
    async with local_stack("record", **settings, monitor_window_seconds=1.0) as stack:
        with http_service() as (url, peer):
            if which in ("all", "incidents"):
                await record(stack, url, peer)
            if which in ("all", "monitor"):
                await record_monitor(stack, url, peer)
            if which in ("all", "approvals"):
                await record_approvals(stack)
            if which in ("all", "changes"):
                await record_changes(stack)
            if which in ("all", "rejected"):
                await record_rejected(stack)


async def record_monitor(stack: LocalStack, url: str, peer) -> None:
    """A ServiceMonitorWorkflow run of three ticks (an outage opens an incident in one), up to its continue-as-new."""
    env, engine = stack.env, stack.engine
    with Session(engine) as session:
        config = ServiceBase.model_validate(
            {"check": {"type": "http", "url": url}, "interval_seconds": 1, "failure_threshold": 2}
        )
        session.add(Service(name="svc", config=config.model_dump(mode="json")))
        session.commit()
    peer.status = 503
    async with incident_worker(env.client, engine, stack.settings):
        handle = await env.client.start_workflow(
            ServiceMonitorWorkflow.run,
            MonitorInput(ticks_per_run=3),
            id="record-monitor",
            task_queue=stack.settings.task_queue,
        )
        first_run = handle.result_run_id
        while (await env.client.get_workflow_handle(handle.id, run_id=first_run).describe()).status == (
            WorkflowExecutionStatus.RUNNING
        ):
            await asyncio.sleep(0.2)
        history = await env.client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
        await handle.terminate(reason="recorded")
    (HERE / "monitor.json").write_text(history.to_json())


async def record(stack: LocalStack, url: str, peer) -> None:
    env, engine = stack.env, stack.engine
    app = create_app(stack.settings, engine=engine, temporal=env.client)
    token = make_user(engine, "responder")[1]
    cases = {"healthy": url, "recovering": url, "down": closed_port_url()}
    async with (
        incident_worker(env.client, engine, stack.settings),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://r", headers={"Authorization": f"Bearer {token}"}
        ) as api,
    ):
        for name, service_url in cases.items():
            peer.script = [503, 503] if name == "recovering" else []
            created = await api.post(
                "/api/incidents", json={"title": name, "service": "svc", "service_url": service_url}
            )
            handle = env.client.get_workflow_handle(created.json()["workflow_id"])
            try:
                await handle.result()
            except WorkflowFailureError:
                pass
            history = await handle.fetch_history()
            (HERE / f"{name}.json").write_text(history.to_json())


async def record_approvals(stack: LocalStack) -> None:
    """A gated step approved with edited params through the API, and one aborted while it waits."""
    env, engine = stack.env, stack.engine
    app = create_app(stack.settings, engine=engine, temporal=env.client)
    admin = {"Authorization": f"Bearer {make_user(engine, 'admin')[1]}"}
    steps = [
        {"id": "monitor", "agent": "noop", "params": {"summary": "web-1 answers 503"}},
        {"id": "remediate", "agent": "noop", "depends_on": ["monitor"], "risk": "high",
         "params": {"target": "web-1", "replicas": 2, "api_token": "tok-recorded"}, "instructions": "restart web-1"},
        {"id": "verify", "agent": "noop", "depends_on": ["remediate"]},
    ]  # fmt: skip
    async with (
        incident_worker(env.client, engine, stack.settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r", headers=admin) as api,
    ):
        playbook = {"id": "gated", "name": "gated", "incident_type": "gated", "steps": steps}
        assert (await api.post("/api/playbooks", json=playbook)).status_code == 201
        for name in ("approved", "aborted-waiting-approval"):
            created = (
                await api.post("/api/incidents", json={"title": name, "service": "web", "incident_type": "gated"})
            ).json()
            handle = env.client.get_workflow_handle(created["workflow_id"])
            while True:
                page = (
                    await api.get("/api/approvals", params={"incident_id": created["id"], "status": "pending"})
                ).json()
                if page["items"]:
                    break
                await asyncio.sleep(0.1)
            approval = page["items"][0]
            if name == "approved":
                body = {"decision": "approve", "params": {**approval["params"], "replicas": 1}, "comment": "go"}
                assert (await api.post(f"/api/approvals/{approval['id']}/decision", json=body)).status_code == 200
            else:
                aborted = await api.post(f"/api/workflows/{created['workflow_id']}/abort", json={"reason": "recorded"})
                assert aborted.status_code == 200, aborted.text
            await handle.result()
            (HERE / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def record_rejected(stack: LocalStack) -> None:
    """A gated step rejected under unapproved_fails: the step fails, the run fails (no retry window here)."""
    env, engine = stack.env, stack.engine
    app = create_app(stack.settings, engine=engine, temporal=env.client)
    admin = {"Authorization": f"Bearer {make_user(engine, 'admin')[1]}"}
    steps = [
        {"id": "remediate", "agent": "noop", "risk": "high", "params": {"summary": "restart web-1"}},
        {"id": "verify", "agent": "noop", "depends_on": ["remediate"]},
    ]
    async with (
        incident_worker(env.client, engine, stack.settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r", headers=admin) as api,
    ):
        playbook = {"id": "refused", "name": "refused", "incident_type": "refused", "steps": steps}
        assert (await api.post("/api/playbooks", json=playbook)).status_code == 201
        body = {"title": "rejected", "service": "web", "incident_type": "refused"}
        created = (await api.post("/api/incidents", json=body)).json()
        while not (page := (await api.get("/api/approvals", params={"incident_id": created["id"]})).json())["items"]:
            await asyncio.sleep(0.1)
        decision = {"decision": "reject", "comment": "not now"}
        assert (await api.post(f"/api/approvals/{page['items'][0]['id']}/decision", json=decision)).status_code == 200
        handle = env.client.get_workflow_handle(created["workflow_id"])
        try:
            await handle.result()
        except WorkflowFailureError:
            pass
        else:
            raise AssertionError("a rejected fix must not complete the run")
        (HERE / "rejected.json").write_text((await handle.fetch_history()).to_json())


async def record_changes(stack: LocalStack) -> None:
    """Run-time changes under guard_changes: a responder edits a risky step's params and adds a risky step while
    a hold step runs (each audited by the projection write); an approver, not the responder, approves both."""
    env, engine = stack.env, stack.engine
    app = create_app(stack.settings, engine=engine, temporal=env.client)
    clients = {role: {"Authorization": f"Bearer {make_user(engine, role)[1]}"} for role in ("admin", "responder")}
    clients["approver"] = {"Authorization": f"Bearer {make_user(engine, 'approver')[1]}"}
    steps = [
        {"id": "hold", "agent": "sleep", "params": {"seconds": 2}},
        {"id": "remediate", "agent": "noop", "depends_on": ["hold"], "risk": "high", "params": {"summary": "planned"}},
    ]  # fmt: skip

    def client(role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r", headers=clients[role])

    async with (
        incident_worker(env.client, engine, stack.settings),
        client("admin") as admin,
        client("responder") as responder,
        client("approver") as approver,
    ):
        playbook = {"id": "changed", "name": "changed", "incident_type": "changed", "steps": steps}
        assert (await admin.post("/api/playbooks", json=playbook)).status_code == 201
        created = (
            await admin.post("/api/incidents", json={"title": "changed", "service": "web", "incident_type": "changed"})
        ).json()
        base = f"/api/workflows/{created['workflow_id']}"
        edited = await responder.patch(f"{base}/steps/remediate", json={"params": {"summary": "edited"}})
        assert edited.status_code == 200, edited.text
        extra = {"id": "extra", "agent": "noop", "depends_on": ["hold"], "risk": "high"}
        assert (await responder.post(f"{base}/steps", json={"step": extra})).status_code == 200
        decided: set[int] = set()
        while len(decided) < 2:
            page = (
                await admin.get("/api/approvals", params={"incident_id": created["id"], "status": "pending"})
            ).json()
            for approval in page["items"]:
                if approval["id"] not in decided:
                    answer = await approver.post(
                        f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"}
                    )
                    assert answer.status_code == 200, answer.text
                    decided.add(approval["id"])
            await asyncio.sleep(0.1)
        handle = env.client.get_workflow_handle(created["workflow_id"])
        await handle.result()
        (HERE / "changed-at-run-time.json").write_text((await handle.fetch_history()).to_json())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "all"))
