"""Run-time changes cannot get around an approval, and a refused change is never applied.

- A step's risk is at least its agent's: a caller may raise it, never lower it (API and workflow alike).
- A step added or changed at run time is never pre-approved by a policy, and its changer may not approve it.
- Every change is validated before the Update is sent; its audit row is written with its record.
- No content (a NUL) can make the projection fail for ever.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlmodel import Session, col, select
from temporalio.client import WorkflowUpdateFailedError

from core.approvals import Approval, ApprovalEvent
from core.audit import AuditEvent
from core.payloads import AbortInput, AddStepInput, WorkflowState
from core.tables import WorkflowRun
from tests.api.test_approvals import pending_approval
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, sleep, step, wait_until, workflow_status

pytestmark = pytest.mark.usefixtures("worker")

COMMAND = {"argv": ["systemctl", "restart", "checkout"]}


def fix(**extra: Any) -> dict[str, Any]:
    return {"id": "fix", "agent": "remediate_command", "depends_on": ["hold"], "params": COMMAND, **extra}


async def query(temporal_client, workflow_id: str) -> WorkflowState:
    return await temporal_client.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState)


async def test_a_caller_cannot_lower_a_steps_risk(api, client_as, temporal_client):
    """The review's finding: `"risk": "low"` on an added remediate_command step ran it at once, no approval."""
    responder = await client_as("responder")
    incident = await run_playbook(api, [sleep("hold", 30)])
    workflow_id = incident["workflow_id"]
    steps = f"/api/workflows/{workflow_id}/steps"
    for lower in ("low", "medium"):
        refused = await responder.post(steps, json={"step": fix(risk=lower)})
        assert refused.status_code == 422, refused.text
        assert f"step fix: risk {lower} is below agent remediate_command's risk high" in refused.json()["detail"]
    # The workflow refuses it too, for callers of the `temporal` CLI.
    handle = temporal_client.get_workflow_handle(workflow_id)
    with pytest.raises(WorkflowUpdateFailedError) as direct:
        await handle.execute_update("add_step", AddStepInput(step=fix(risk="low"), actor="cli"))
    assert "risk low is below agent remediate_command's risk high" in str(direct.value.cause)
    assert [s.step_id for s in (await query(temporal_client, workflow_id)).steps] == ["hold"]
    # Raising is a caller's to choose.
    raised = await responder.post(steps, json={"step": {**fix(risk="critical"), "id": "fix2"}})
    assert raised.status_code == 200, raised.text
    added = await handle.execute_update(
        "add_step", AddStepInput(step={**fix(), "id": "fix3"}, actor="cli"), result_type=WorkflowState
    )
    assert added.steps[-1].step_id == "fix3"
    assert added.changes[-1]["step"]["risk"] == "high"  # no risk given: the agent's
    assert (await api.post(f"/api/workflows/{workflow_id}/abort", json={"reason": "done"})).status_code == 200


async def test_a_playbook_cannot_declare_a_step_less_risky_than_its_agent(api):
    body = {"id": "low-fix", "name": "x", "incident_type": "low-fix",
            "steps": [{"id": "fix", "agent": "remediate_command", "params": COMMAND, "risk": "low"}]}  # fmt: skip
    refused = await api.post("/api/playbooks", json=body)
    assert refused.status_code == 422
    assert "step fix: risk low is below agent remediate_command's risk high" in refused.text
    assert "approval policy" in refused.text


async def test_a_step_changed_at_run_time_waits_for_someone_else_never_a_policy(
    api, client_as, temporal_client, engine
):
    trusted = {"name": f"trust noop {uuid.uuid4().hex[:6]}", "agent": "noop", "max_risk": "critical",
               "auto_approve": True}  # fmt: skip
    assert (await api.post("/api/approval-policies", json=trusted)).status_code == 201
    incident = await run_playbook(
        api,
        [
            sleep("hold", 2),
            step("planned", "noop", "hold", risk="high", params={"summary": "as planned"}),
            step("edited", "noop", "hold", risk="high", params={"summary": "as written"}),
        ],
    )
    workflow_id = incident["workflow_id"]
    ann_name = f"ann-{uuid.uuid4().hex[:6]}"
    ann, bob = await client_as("approver", ann_name), await client_as("approver")
    edited = await ann.patch(f"/api/workflows/{workflow_id}/steps/edited", json={"params": {"summary": "ann's"}})
    assert edited.status_code == 200, edited.text
    added = await ann.post(
        f"/api/workflows/{workflow_id}/steps",
        json={"step": step("added", "noop", "hold", risk="high", params={"summary": "added"})},
    )
    assert added.status_code == 200, added.text

    def approvals() -> dict[str, Approval]:
        with Session(engine) as session:
            rows = session.exec(select(Approval).where(Approval.workflow_id == workflow_id)).all()
        return {row.step_id: row for row in rows}

    await wait_until(lambda: len(approvals()) == 3, what="three approval requests")
    found = approvals()
    assert found["planned"].status == "approved" and found["planned"].decided_by.startswith("policy:trust noop")
    assert (found["edited"].status, found["added"].status) == ("pending", "pending")  # no policy for changed steps
    assert (found["planned"].changed_by, found["edited"].changed_by, found["added"].changed_by) == (
        None, ann_name, ann_name
    )  # fmt: skip
    page = await bob.get(f"/approvals/{found['edited'].id}")
    assert page.status_code == 200 and f"added or changed at run time by {ann_name}, who may not decide it" in page.text
    for step_id in ("edited", "added"):
        own = await ann.post(f"/api/approvals/{found[step_id].id}/decision", json={"decision": "approve"})
        assert own.status_code == 403, own.text
        assert f"they added or changed step {step_id} at run time, so someone else must" in own.json()["detail"]
    state = await query(temporal_client, workflow_id)
    assert {s.step_id: s.approval.changed_by for s in state.steps if s.approval} == {
        "planned": None, "edited": ann_name, "added": ann_name
    }  # fmt: skip
    for step_id in ("edited", "added"):
        other = await bob.post(f"/api/approvals/{found[step_id].id}/decision", json={"decision": "approve"})
        assert other.status_code == 200, other.text
    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    outputs = {s.step_id: s.output["summary"] for s in state.steps if s.output}
    assert (outputs["edited"], outputs["added"], outputs["planned"]) == ("ann's", "added", "as planned")
    with Session(engine) as session:
        requested = session.exec(
            select(ApprovalEvent).where(ApprovalEvent.kind == "requested").order_by(col(ApprovalEvent.id))
        ).all()
    assert sorted(e.data.get("changed_by", "-") for e in requested) == ["-", ann_name, ann_name]


async def test_an_admin_may_approve_a_step_they_changed(api, temporal_client):
    incident = await run_playbook(api, [sleep("hold", 1)])
    workflow_id = incident["workflow_id"]
    added = await api.post(f"/api/workflows/{workflow_id}/steps", json={"step": step("extra", "noop", "hold",
                                                                                       risk="high")})  # fmt: skip
    assert added.status_code == 200, added.text
    approval = await pending_approval(api, incident["id"])
    decided = await api.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "abort", {"reason": "stop\x00now"}),
        ("post", "steps", {"step": step("x", "noop", "hold", params={"summary": "a\x00b"})}),
        ("post", "steps", {"step": step("x", "noop", "hold", params={"k\x00": "v"})}),
        ("patch", "steps/later", {"params": {"summary": "a\x00b"}}),
        ("post", "retry", {"step_id": "later", "params": {"summary": "\x00"}}),
    ],
)
async def test_a_change_refused_for_its_content_is_not_applied(api, temporal_client, engine, method, path, body):
    """The review's finding: a NUL in a change's body was refused (422) after the Update had applied it, with no
    audit row. Now nothing reaches the workflow."""
    incident = await run_playbook(api, [sleep("hold", 30), step("later", "noop", "hold")])
    workflow_id = incident["workflow_id"]
    refused = await getattr(api, method)(f"/api/workflows/{workflow_id}/{path}", json=body)
    assert refused.status_code == 422, refused.text
    assert "a NUL character is not allowed" in refused.json()["detail"]
    state = await query(temporal_client, workflow_id)
    assert state.changes == [] and state.status == "in_progress"
    assert [s.step_id for s in state.steps] == ["hold", "later"]
    with Session(engine) as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.target_id == workflow_id)).all() == []
    # The workflow's validators refuse it too.
    with pytest.raises(WorkflowUpdateFailedError):
        await temporal_client.get_workflow_handle(workflow_id).execute_update(
            "abort", AbortInput(reason="a\x00", actor="cli")
        )
    assert (await api.post(f"/api/workflows/{workflow_id}/abort", json={"reason": "done"})).status_code == 200


async def test_a_nul_that_gets_in_cannot_poison_the_projection(api, temporal_client, engine):
    """The review's finding: a NUL in an abort reason made every projection write fail, retried every 10 s for
    ever, and the incident showed in_progress. A signal cannot be refused, so the write must take it."""
    incident = await run_playbook(api, [sleep("hold", 30)])
    workflow_id = incident["workflow_id"]
    handle = temporal_client.get_workflow_handle(workflow_id)
    await wait_until(lambda: workflow_status(engine, workflow_id) == "in_progress", what="the first row")
    await handle.signal("abort_signal", AbortInput(reason="disk\x00full", actor="cli"))
    await wait_until(lambda: workflow_status(engine, workflow_id) == "cancelled", timeout=30, what="the abort")
    with Session(engine) as session:
        run = session.get(WorkflowRun, workflow_id)
        assert run.error == "aborted by cli: disk\ufffdfull"
        assert run.changes[-1]["reason"] == "disk\ufffdfull"
        (audited,) = session.exec(select(AuditEvent).where(AuditEvent.target_id == workflow_id)).all()
    assert (audited.action, audited.actor, audited.actor_kind) == ("workflow.abort", "cli", "temporal")
    assert (await query(temporal_client, workflow_id)).projection_error is None


ROLES = ["viewer", "responder", "approver", "admin"]


async def trust_noop(api) -> None:
    """A policy that pre-approves every noop step: only the change guard can make one wait for a person."""
    policy = {"name": f"trust noop {uuid.uuid4().hex[:6]}", "agent": "noop", "max_risk": "critical",
              "auto_approve": True}  # fmt: skip
    assert (await api.post("/api/approval-policies", json=policy)).status_code == 201


def approvals_of(engine, workflow_id: str) -> dict[str, Approval]:
    with Session(engine) as session:
        rows = session.exec(select(Approval).where(Approval.workflow_id == workflow_id)).all()
    return {row.step_id: row for row in rows}


@pytest.mark.parametrize("role", ROLES)
async def test_every_role_and_every_change_on_risky_and_safe_steps(api, client_as, temporal_client, engine, role):
    """The route walker of run-time changes: each role × add, edit, remove × a risky and a safe step."""
    await trust_noop(api)
    incident = await run_playbook(
        api,
        [
            sleep("hold", 4),
            step("planned", "noop", "hold", risk="high"),
            step("risky", "noop", "hold", risk="high", params={"summary": "as written"}),
            step("safe", "noop", "hold", params={"summary": "as written"}),
            step("gone_r", "noop", "hold", risk="high"),
            step("gone_s", "noop", "hold"),
        ],
    )
    workflow_id = incident["workflow_id"]
    base = f"/api/workflows/{workflow_id}"
    caller = await client_as(role)
    answers = {
        "add risky": await caller.post(f"{base}/steps", json={"step": step("added_r", "noop", "hold", risk="high")}),
        "add safe": await caller.post(f"{base}/steps", json={"step": step("added_s", "noop", "hold")}),
        "edit risky": await caller.patch(f"{base}/steps/risky", json={"params": {"summary": "edited"}}),
        "edit safe": await caller.patch(f"{base}/steps/safe", json={"params": {"summary": "edited"}}),
        "remove risky": await caller.delete(f"{base}/steps/gone_r"),
        "remove safe": await caller.delete(f"{base}/steps/gone_s"),
    }
    expected = 403 if role == "viewer" else 200
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, expected), {
        name: r.text for name, r in answers.items()
    }
    if role == "viewer":
        await wait_until(lambda: len(approvals_of(engine, workflow_id)) == 3, what="the playbook's approvals")
        assert {s: a.status for s, a in approvals_of(engine, workflow_id).items()} == dict.fromkeys(
            ("planned", "risky", "gone_r"), "approved"
        )  # nothing changed: the policy approves the playbook's steps
        outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
        assert outcome == "completed"
        return
    await wait_until(lambda: len(approvals_of(engine, workflow_id)) == 3, what="three approval requests")
    found = approvals_of(engine, workflow_id)
    assert {s: a.status for s, a in found.items()} == {"planned": "approved", "risky": "pending", "added_r": "pending"}

    for _ in range(300):  # the unchanged and the safe steps run; the changed risky ones wait for a person
        state = await query(temporal_client, workflow_id)
        done = {s.step_id for s in state.steps if s.status == "completed"}
        if done >= {"hold", "planned", "safe", "added_s"}:
            break
        await asyncio.sleep(0.1)
    assert done == {"hold", "planned", "safe", "added_s"}
    assert {s.step_id: s.status for s in state.steps if s.step_id not in done} == dict.fromkeys(
        ("risky", "added_r"), "waiting_approval"
    )
    own = await caller.post(f"/api/approvals/{found['risky'].id}/decision", json={"decision": "approve"})
    assert own.status_code == (200 if role == "admin" else 403), own.text
    assert (await api.post(f"{base}/abort", json={"reason": "done"})).status_code == 200


@pytest.mark.parametrize("role", ROLES)
async def test_every_role_retrying_a_risky_step_with_new_params(
    api, client_as, temporal_client, engine, settings, role
):
    settings.retry_window_seconds = 600
    await trust_noop(api)
    incident = await run_playbook(
        api, [step("broken", "noop", risk="high", fail_on_negative=True, params={"ok": False, "summary": "no"})]
    )
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: workflow_status(engine, workflow_id) == "failed", what="the step to fail")
    assert approvals_of(engine, workflow_id)["broken"].status == "approved"  # the playbook's: the policy's to approve
    caller = await client_as(role)
    body = {"step_id": "broken", "params": {"ok": True, "summary": "retried"}}
    retried = await caller.post(f"/api/workflows/{workflow_id}/retry", json=body)
    if role == "viewer":
        assert retried.status_code == 403
        assert (await api.post(f"/api/workflows/{workflow_id}/abort", json={})).status_code == 200
        return
    assert retried.status_code == 200, retried.text
    approval = await pending_approval(api, incident["id"])  # run 2: a person's to decide, not the policy's
    assert (approval["step_id"], approval["status"]) == ("broken", "pending")
    own = await caller.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
    assert own.status_code == (200 if role == "admin" else 403), own.text
    if role != "admin":
        other = await client_as("approver")
        assert (
            await other.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
        ).status_code == 200
    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed" and state.steps[0].output["summary"] == "retried"
