"""Who may approve a playbook's steps, restricted per playbook (issue 23): a playbook's `approvers` apply to its
steps that need approval and name nobody themselves; a step's own approvers win; admins always may decide. Real
workflow on the dev server, decisions through the API."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.conftest import app_client
from tests.factories import create_incident, make_user, wait_for_workflow

pytestmark = pytest.mark.usefixtures("worker")


async def pending(api, incident_id: int, step_id: str) -> dict[str, Any]:
    for _ in range(600):
        page = (await api.get("/api/approvals", params={"status": "pending", "incident_id": incident_id})).json()
        for approval in page["items"]:
            if approval["step_id"] == step_id:
                return approval
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending approval of {step_id} appeared")


async def test_a_playbooks_approvers_decide_its_steps_unless_a_step_names_its_own(api, app, engine, temporal_client):
    team = (await api.post("/api/teams", json={"name": "sre"})).json()
    make_user(engine, "approver", username="sam")
    sre_member, sre_token = make_user(engine, "approver", username="sue")
    _, outsider_token = make_user(engine, "approver", username="ola")
    assert (await api.put(f"/api/teams/{team['id']}/members/{sre_member.id}")).status_code == 200
    pid = f"pb-{uuid.uuid4().hex[:8]}"
    steps = [
        {"id": "restart", "agent": "noop", "risk": "high"},  # names nobody: the playbook's approvers
        {"id": "failover", "agent": "noop", "risk": "high", "depends_on": ["restart"],
         "approvers": {"users": ["sam"], "teams": []}},  # its own: only sam (and admins)
    ]  # fmt: skip
    body = {"id": pid, "name": "gated", "incident_type": pid, "steps": steps, "approvers": {"teams": ["sre"]}}
    stored = await api.post("/api/playbooks", json=body)
    assert stored.status_code == 201, stored.text
    assert stored.json()["approvers"] == {"users": [], "teams": ["sre"]}
    incident = await create_incident(api, incident_type=pid)

    async with (
        app_client(app, headers={"Authorization": f"Bearer {outsider_token}"}) as outsider,
        app_client(app, headers={"Authorization": f"Bearer {sre_token}"}) as member,
    ):
        first = await pending(api, incident["id"], "restart")
        assert first["approvers"]["teams"] == ["sre"]
        refused = await outsider.post(f"/api/approvals/{first['id']}/decision", json={"decision": "approve"})
        assert refused.status_code == 403  # an approver, but not of team sre
        decided = await member.post(f"/api/approvals/{first['id']}/decision", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text

        second = await pending(api, incident["id"], "failover")
        assert second["approvers"]["users"] == ["sam"]
        refused = await member.post(f"/api/approvals/{second['id']}/decision", json={"decision": "approve"})
        assert refused.status_code == 403  # the step's own approvers win over the playbook's team
    admin = await api.post(f"/api/approvals/{second['id']}/decision", json={"decision": "approve"})
    assert admin.status_code == 200, admin.text  # admins always may
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"


async def test_approvers_must_be_users_and_teams(api):
    body = {"id": f"pb-{uuid.uuid4().hex[:8]}", "name": "x", "steps": [{"id": "a", "agent": "noop"}]}
    refused = await api.post("/api/playbooks", json=body | {"approvers": {"role": "viewer"}})
    assert refused.status_code == 422 and "approvers" in refused.json()["detail"]
