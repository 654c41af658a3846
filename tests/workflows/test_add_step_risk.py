"""A step added at run time gets its agent's default risk, as a stored playbook's steps do: a risky agent added
to a running incident still waits for a human."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from core.approvals import Approval
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, sleep, wait_until, workflow_status

pytestmark = pytest.mark.usefixtures("worker")


async def test_an_added_remediation_step_waits_for_approval(api, temporal_client, engine):
    incident = await run_playbook(api, [sleep("hold", 2)])
    workflow_id = incident["workflow_id"]
    bad = await api.post(
        f"/api/workflows/{workflow_id}/steps",
        json={"step": {"id": "fix", "agent": "remediate_command", "depends_on": ["hold"], "params": {}}},
    )
    assert bad.status_code == 422 and "step fix: params: 'argv' is a required property" in bad.text
    added = await api.post(
        f"/api/workflows/{workflow_id}/steps",
        json={
            "step": {
                "id": "fix",
                "agent": "remediate_command",
                "depends_on": ["hold"],
                "params": {"argv": ["systemctl", "restart", "checkout"]},
            }
        },
    )
    assert added.status_code == 200, added.text
    await wait_until(lambda: workflow_status(engine, workflow_id) == "waiting_approval", what="the approval gate")

    def requests() -> list[Approval]:  # recorded by the gate's activity, just after the status moves
        with Session(engine) as session:
            return list(session.exec(select(Approval).where(Approval.workflow_id == workflow_id)).all())

    await wait_until(lambda: len(requests()) == 1, what="the approval request")
    (approval,) = requests()
    assert approval.step_id == "fix" and approval.risk == "high"
    rejected = await api.post(f"/api/approvals/{approval.id}/decision", json={"decision": "reject", "comment": "no"})
    assert rejected.status_code == 200, rejected.text
    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    # The fix did not run: the run halts (failed once the retry window passes), it does not complete.
    assert outcome == "failed"
    assert {s.step_id: s.status for s in state.steps} == {"hold": "completed", "fix": "failed"}
    assert state.steps[1].error == "not run: approval rejected by root: no"
