"""A pending approval survives a restart of everything that runs it: the Temporal dev server (same database
file) and the worker both stop while two approvals wait; once they are back, one is decided and the other
expires — each exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import datetime

from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError

from core.approvals import Approval, ApprovalEvent
from core.converter import DATA_CONVERTER
from core.payloads import DecideApprovalInput, IncidentContext, IncidentWorkflowInput, WorkflowState
from core.tables import IncidentCreate, utcnow
from core.temporal_dev import start_dev_argv
from services.incidents.open import insert_incident
from tests.factories import TEST_ACTOR
from tests.peers import free_port
from tests.workflows.test_approvals import playbook
from tests.workflows.test_worker_crash import start_worker


async def connect(address: str) -> Client:
    for _ in range(300):
        try:
            return await Client.connect(address, data_converter=DATA_CONVERTER)
        except RuntimeError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"the dev server at {address} did not come up")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pending(engine) -> dict[str, Approval]:
    with Session(engine) as session:
        return {a.workflow_id: a for a in session.exec(select(Approval).where(Approval.status == "pending"))}


async def test_a_pending_approval_survives_a_restart_of_temporal_and_the_worker(engine, settings, tmp_path):
    port = free_port()
    argv = start_dev_argv(data_dir=tmp_path, port=port, ui_port=free_port())
    here = settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}", "task_queue": f"rs-{uuid.uuid4().hex}"})
    processes = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        client = await connect(here.temporal_address)
        processes.append(start_worker(here))
        ids = {}
        # Long enough for a slow start under load (a worker process, two workflows) to get both pending first.
        for name, timeout in (("decided", 600), ("expires", 20)):
            with Session(engine) as session:
                incident, _ = insert_incident(
                    session=session,
                    data=IncidentCreate(title=name, service="web"),
                    idempotency_key=None,
                    actor=TEST_ACTOR,
                    settings=here.model_copy(update={"workflow_id_prefix": f"rs-{uuid.uuid4().hex[:8]}-"}),
                )
                ids[name] = incident.workflow_id
                context = IncidentContext(incident.id, incident.title, incident.service, "P3")
            await client.start_workflow(
                "IncidentWorkflow",
                IncidentWorkflowInput(
                    incident=context, playbook=playbook(approval_timeout_seconds=timeout), known_agents=["noop"]
                ),
                id=ids[name],
                task_queue=here.task_queue,
            )
        for _ in range(300):
            if set(pending(engine)) == set(ids.values()):
                break
            await asyncio.sleep(0.1)
        waiting = pending(engine)
        assert set(waiting) == set(ids.values()), "both approvals should wait before the restart"
        expires_at = waiting[ids["expires"]].expires_at

        for process in reversed(processes):  # the worker, then the dev server
            stop(process)
        processes.clear()
        await asyncio.sleep(max(0.0, (expires_at - utcnow()).total_seconds()) + 0.5)  # it expires while all is down
        processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = await connect(here.temporal_address)
        processes.append(start_worker(here))

        decided = client.get_workflow_handle(ids["decided"], result_type=WorkflowState)
        decision = DecideApprovalInput(decision="approve", step_id="remediate", actor="alice", actor_role="approver")
        await decided.execute_update("decide_approval", decision)
        try:
            await decided.execute_update("decide_approval", decision)
            raise AssertionError("a second decision was accepted")
        except WorkflowUpdateFailedError as err:
            assert "already approved by alice" in str(err.cause)
        done = await asyncio.wait_for(decided.result(), 60)
        timed_out = await asyncio.wait_for(
            client.get_workflow_handle(ids["expires"], result_type=WorkflowState).result(), 60
        )
    finally:
        for process in reversed(processes):
            stop(process)

    assert [s.status for s in done.steps] == ["completed", "completed", "completed"]
    assert timed_out.steps[1].status == "skipped" and timed_out.steps[1].approval.status == "expired"
    assert datetime.fromisoformat(timed_out.steps[1].approval.decided_at) == expires_at
    with Session(engine) as session:
        rows = {a.workflow_id: a for a in session.exec(select(Approval))}
        for workflow_id, status in ((ids["decided"], "approved"), (ids["expires"], "expired")):
            assert rows[workflow_id].status == status
            kinds = session.exec(
                select(ApprovalEvent.kind)
                .where(ApprovalEvent.approval_id == rows[workflow_id].id)
                .order_by(col(ApprovalEvent.id))
            ).all()
            assert kinds == ["requested", "decided" if status == "approved" else "expired"]  # exactly once
