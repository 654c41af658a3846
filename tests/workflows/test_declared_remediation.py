"""The built-in default playbook runs a registered service's declared remediation (issue 19, finding 9: its
`remediate` step only recorded "no action"): with approval, and not when the diagnosis says it is healthy."""

from __future__ import annotations

from pathlib import Path

from core.commands import CommandRule
from tests.activities.test_remediate_command import script
from tests.api.test_approvals import pending_approval
from tests.factories import create_incident, wait_for_workflow
from tests.peers import http_service


def service_body(name: str, url: str, command: list[str]) -> dict:
    return {"name": name, "check": {"type": "http", "url": url}, "interval_seconds": 3600, "enabled": False,
            "remediation": {"command": command}}  # fmt: skip


async def test_the_default_playbook_runs_the_declared_restart_after_approval(
    api, settings, temporal_client, worker, tmp_path: Path
):
    restarts = tmp_path / "restarts.log"
    fix = script(tmp_path, "restart.sh", 'echo restarted >> "$1"\n')
    command = [fix, str(restarts)]
    with http_service() as (url, peer):
        refused = await api.post("/api/services", json=service_body("billing", url, command))
        assert refused.status_code == 422 and "COMMAND_ALLOWLIST is empty" in refused.text
        settings.command_allowlist = [CommandRule(argv=command)]
        created = await api.post("/api/services", json=service_body("billing", url, command))
        assert created.status_code == 201, created.text

        peer.status = 503
        incident = await create_incident(api, service="billing")  # its type has no playbook: the default runs
        approval = await pending_approval(api, incident["id"])
        assert (approval["step_id"], approval["agent"], approval["risk"]) == ("remediate", "remediate_command", "high")
        assert approval["params"]["argv"] == command
        peer.status = 200  # what the restart does, for verify to see
        decided = await api.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed", state.error
    assert restarts.read_text().splitlines() == ["restarted"]
    assert {s.step_id: s.status for s in state.steps}["verify"] == "completed"


async def test_a_healthy_diagnosis_skips_the_declared_restart(api, settings, temporal_client, worker, tmp_path):
    restarts = tmp_path / "restarts.log"
    command = [script(tmp_path, "restart.sh", 'echo restarted >> "$1"\n'), str(restarts)]
    settings.command_allowlist = [CommandRule(argv=command)]
    with http_service() as (url, _peer):
        assert (await api.post("/api/services", json=service_body("ledger", url, command))).status_code == 201
        incident = await create_incident(api, service="ledger")  # healthy from here
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    remediate = next(s for s in state.steps if s.step_id == "remediate")
    assert outcome == "completed" and remediate.status == "skipped"
    assert remediate.note.startswith("condition is false") and not restarts.exists()
