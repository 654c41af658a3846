"""The DAG engine on the real dev server: parallel branches, joins, conditions, failures, run-time changes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from sqlmodel import Session, col, select

from core.audit import AuditEvent
from core.payloads import WorkflowState
from core.tables import AgentRun, Event, WorkflowRun, WorkflowStep
from tests.factories import create_incident, wait_for_workflow

pytestmark = pytest.mark.usefixtures("worker")


def step(step_id: str, agent: str = "noop", *deps: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "agent": agent, "depends_on": list(deps), **extra}


def sleep(step_id: str, seconds: float, *deps: str, **extra: Any) -> dict[str, Any]:
    return step(step_id, "sleep", *deps, **{"params": {"seconds": seconds}, "heartbeat_seconds": 2, **extra})


async def run_playbook(api, steps: list[dict[str, Any]], **playbook: Any) -> dict[str, Any]:
    """Store a playbook for a fresh incident type and open an incident of that type."""
    incident_type = f"t-{uuid.uuid4().hex[:10]}"
    body = {"id": incident_type, "name": "test", "incident_type": incident_type, "steps": steps, **playbook}
    stored = await api.post("/api/playbooks", json=body)
    assert stored.status_code == 201, stored.text
    return await create_incident(api, incident_type=incident_type)


def runs(engine, workflow_id: str) -> dict[str, list[AgentRun]]:
    with Session(engine) as session:
        rows = session.exec(
            select(AgentRun).where(AgentRun.workflow_id == workflow_id).order_by(col(AgentRun.id))
        ).all()
    found: dict[str, list[AgentRun]] = {}
    for row in rows:
        found.setdefault(row.step_id, []).append(row)
    return found


async def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def workflow_status(engine, workflow_id: str) -> str | None:
    with Session(engine) as session:
        run = session.get(WorkflowRun, workflow_id)
        return run.status if run else None


def statuses(state: WorkflowState) -> dict[str, str]:
    return {s.step_id: s.status for s in state.steps}


async def test_parallel_branches_overlap_and_converge_at_the_join(api, temporal_client, engine):
    incident = await run_playbook(
        api,
        [
            step("monitor"),
            sleep("logs", 1, "monitor"),
            sleep("metrics", 1, "monitor"),
            sleep("deps", 1, "monitor"),
            step("join", "noop", "logs", "metrics", "deps"),
        ],
    )
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    ran = runs(engine, incident["workflow_id"])
    branches = [ran[name][0] for name in ("logs", "metrics", "deps")]
    assert max(r.started_at for r in branches) < min(r.finished_at for r in branches)  # they overlapped
    join = next(s for s in state.steps if s.step_id == "join")
    assert join.status == "completed"
    with Session(engine) as session:
        from core.tables import WorkflowStep

        stored = session.exec(select(WorkflowStep).where(WorkflowStep.step_id == "join")).one()
    assert set(stored.input["dependency_outputs"]) == {"logs", "metrics", "deps"}
    assert stored.input["previous_agent_output"]["metrics"]["summary"] == "waited 1s"


async def test_sequential_fallback_runs_one_branch_at_a_time(api, temporal_client, engine):
    incident = await run_playbook(
        api, [step("monitor"), sleep("a", 0.3, "monitor"), sleep("b", 0.3, "monitor")], parallel=False
    )
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    ran = runs(engine, incident["workflow_id"])
    assert ran["a"][0].finished_at <= ran["b"][0].started_at


async def test_first_success_cancels_the_losers(api, temporal_client, engine):
    incident = await run_playbook(
        api,
        [
            sleep("fast", 0.2),
            sleep("slow", 30),
            sleep("slower", 30),
            step("pick", "noop", "fast", "slow", "slower", join={"strategy": "first_success"}),
        ],
    )
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    assert statuses(state) == {"fast": "completed", "slow": "cancelled", "slower": "cancelled", "pick": "completed"}
    slow = next(s for s in state.steps if s.step_id == "slow")
    assert "join pick already has 1 of 1 successes" in slow.note
    await wait_until(
        lambda: all(r.status != "running" for rs in runs(engine, incident["workflow_id"]).values() for r in rs),
        what="cancelled agents to stop",
    )


async def test_at_least_two_proceeds_after_two(api, temporal_client):
    incident = await run_playbook(
        api,
        [
            sleep("a", 0.1),
            sleep("b", 0.3),
            sleep("c", 30),
            step("enough", "noop", "a", "b", "c", join={"strategy": "at_least", "count": 2}),
        ],
    )
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    assert statuses(state) == {"a": "completed", "b": "completed", "c": "cancelled", "enough": "completed"}


async def test_a_failing_branch_leaves_the_others_completing(api, temporal_client):
    incident = await run_playbook(
        api,
        [
            step("start"),
            sleep("stuck", 30, "start", timeout_seconds=1, retry={"max_attempts": 1}, on_failure="continue"),
            sleep("fine", 0.2, "start"),
            step("join", "noop", "stuck", "fine"),
        ],
    )
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    assert statuses(state) == {"start": "completed", "stuck": "failed", "fine": "completed", "join": "completed"}
    assert "timed out" in next(s for s in state.steps if s.step_id == "stuck").error


async def test_skip_dependents_spreads_and_the_condition_skips_remediation(api, temporal_client):
    incident = await run_playbook(
        api,
        [
            step("investigate", params={"ok": True, "summary": "resolved by itself"}),
            step("remediate", "noop", "investigate", when="!(steps.investigate.output.ok == true)"),
            step("verify", "noop", "remediate"),
            sleep("flaky", 30, timeout_seconds=1, retry={"max_attempts": 1}, on_failure="skip_dependents"),
            step("after_flaky", "noop", "flaky"),
        ],
    )
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    by_id = {s.step_id: s for s in state.steps}
    assert by_id["remediate"].status == "skipped"
    assert by_id["remediate"].note.startswith("condition is false")
    assert by_id["verify"].status == "completed"  # a condition skip does not spread
    assert by_id["after_flaky"].status == "skipped" and "flaky did not succeed" in by_id["after_flaky"].note


async def test_retry_with_edited_params_completes_without_rerunning_completed_steps(
    api, temporal_client, engine, settings
):
    settings.retry_window_seconds = 600
    incident = await run_playbook(
        api,
        [
            step("before"),
            sleep("stuck", 30, "before", timeout_seconds=1, retry={"max_attempts": 1}),
            step("after", "noop", "stuck"),
        ],
    )
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: workflow_status(engine, workflow_id) == "failed", what="the step to fail")
    live = (await api.get(f"/api/workflows/{workflow_id}")).json()
    assert live["live"] is True and live["status"] == "failed" and "waiting for retry_step" in live["error"]

    wrong = await api.post(f"/api/workflows/{workflow_id}/retry", json={"step_id": "before"})
    assert wrong.status_code == 409 and "not a failed step" in wrong.json()["detail"]
    retried = await api.post(
        f"/api/workflows/{workflow_id}/retry", json={"step_id": "stuck", "params": {"seconds": 0.1}}
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["changes"][-1]["kind"] == "retry_step"
    assert retried.json()["changes"][-1]["actor"] == "root"

    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    assert statuses(state) == {"before": "completed", "stuck": "completed", "after": "completed"}
    ran = runs(engine, workflow_id)
    assert [len(ran[s]) for s in ("before", "stuck", "after")] == [1, 2, 1]
    assert next(s for s in state.steps if s.step_id == "stuck").runs == 2
    audit = (await api.get("/api/audit", params={"action": "workflow.retry"})).json()["items"]
    assert audit[0]["target_id"] == workflow_id and audit[0]["after"]["params"] == {"seconds": 0.1}


async def test_retry_through_the_temporal_cli(api, temporal_client, temporal_env, engine, settings):
    settings.retry_window_seconds = 600
    incident = await run_playbook(
        api, [sleep("stuck", 30, timeout_seconds=1, retry={"max_attempts": 1}), step("after", "noop", "stuck")]
    )
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: workflow_status(engine, workflow_id) == "failed", what="the step to fail")
    from core.temporal_dev import temporal_binary

    command = [
        str(temporal_binary()),
        "workflow",
        "update",
        "execute",
        "--address",
        temporal_env.client.service_client.config.target_host,
        "--workflow-id",
        workflow_id,
        "--name",
        "retry_step",
        "--input",
        json.dumps({"step_id": "stuck", "params": {"seconds": 0.1}, "actor": "oncall-cli"}),
    ]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    assert state.changes[-1]["actor"] == "oncall-cli"


async def test_run_time_changes_are_validated_and_recorded(api, temporal_client, engine):
    incident = await run_playbook(api, [sleep("gate", 1.5), step("next", "noop", "gate")])
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: "gate" in runs(engine, workflow_id), what="the gate to start")

    edited = await api.patch(f"/api/workflows/{workflow_id}/steps/next", json={"params": {"summary": "edited"}})
    assert edited.status_code == 200, edited.text
    added = await api.post(f"/api/workflows/{workflow_id}/steps", json={"step": step("extra", "noop", "next")})
    assert added.status_code == 200, added.text
    refusals = {
        "started": await api.patch(f"/api/workflows/{workflow_id}/steps/gate", json={"params": {}}),
        "dependents": await api.delete(f"/api/workflows/{workflow_id}/steps/next"),
        "unknown dep": await api.post(f"/api/workflows/{workflow_id}/steps", json={"step": step("x", "noop", "ghost")}),
        "duplicate": await api.post(f"/api/workflows/{workflow_id}/steps", json={"step": step("next")}),
    }
    for name, response in refusals.items():
        assert response.status_code == 409, (name, response.text)
    # What needs no workflow state is refused before the Update is sent.
    refusals["unknown agent"] = await api.post(
        f"/api/workflows/{workflow_id}/steps", json={"step": step("y", "teleport")}
    )
    assert refusals["unknown agent"].status_code == 422
    assert "only pending steps" in refusals["started"].json()["detail"]
    assert "extra depend on it" in refusals["dependents"].json()["detail"]
    assert "unknown step 'ghost'" in refusals["unknown dep"].json()["detail"]
    assert "unknown agent 'teleport'" in refusals["unknown agent"].json()["detail"]

    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    by_id = {s.step_id: s for s in state.steps}
    assert by_id["next"].output["summary"] == "edited"
    assert by_id["extra"].status == "completed"
    assert [c["kind"] for c in state.changes] == ["update_step_params", "add_step"]
    with Session(engine) as session:
        assert [c["kind"] for c in session.get(WorkflowRun, workflow_id).changes] == ["update_step_params", "add_step"]
        audited = session.exec(
            select(AuditEvent).where(AuditEvent.target_id == workflow_id).order_by(col(AuditEvent.id))
        ).all()
    # One audit row per change, written with the change's record, with who made it and from where.
    assert [(a.action, a.actor, a.actor_kind) for a in audited] == [
        ("workflow.update_step_params", "root", "token"),
        ("workflow.add_step", "root", "token"),
    ]
    assert audited[0].after == {"kind": "update_step_params", "step_id": "next", "params": {"summary": "edited"}}
    assert audited[1].after["step"]["id"] == "extra" and audited[1].actor_user_id is not None


async def test_a_slow_step_shows_running_and_every_step_gets_its_running_and_outcome_events(
    api, temporal_client, engine
):
    """A step that takes a while is visible as running (step row and agent run) while it runs; a quick one is
    written once, started and ended together, and the timeline still reads running → completed for both."""
    incident = await run_playbook(api, [step("quick"), sleep("slow", 2, "quick")])
    workflow_id = incident["workflow_id"]

    def slow_running() -> bool:
        with Session(engine) as session:
            row = session.exec(
                select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id, WorkflowStep.step_id == "slow")
            ).first()
        agent = runs(engine, workflow_id).get("slow")
        return row is not None and row.status == "running" and bool(agent) and agent[-1].status == "running"

    await wait_until(slow_running, timeout=15, what="the slow step to show as running")
    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed" and statuses(state) == {"quick": "completed", "slow": "completed"}
    with Session(engine) as session:
        events = session.exec(
            select(Event).where(Event.workflow_id == workflow_id, Event.kind == "step.status").order_by(col(Event.id))
        ).all()
    timeline: dict[str, list[str]] = {}
    for event in events:
        timeline.setdefault(event.step_id or "", []).append(event.data["status"])
    assert timeline == {"quick": ["running", "completed"], "slow": ["running", "completed"]}
    for rows in runs(engine, workflow_id).values():
        assert [r.status for r in rows] == ["succeeded"]
        assert rows[0].finished_at is not None and rows[0].started_at <= rows[0].finished_at


async def test_abort_cancels_running_steps(api, temporal_client, engine):
    incident = await run_playbook(api, [sleep("long", 60), step("after", "noop", "long")])
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: "long" in runs(engine, workflow_id), what="the step to start")
    aborted = await api.post(f"/api/workflows/{workflow_id}/abort", json={"reason": "false alarm"})
    assert aborted.status_code == 200
    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed" and state.status == "cancelled"
    assert statuses(state) == {"long": "cancelled", "after": "cancelled"}
    assert state.error == "aborted by root: false alarm"
    again = await api.post(f"/api/workflows/{workflow_id}/abort", json={})
    assert again.status_code == 409


async def test_invalid_playbooks_are_422_naming_the_step(api):
    cases = {
        "cycle": ([step("a", "noop", "b"), step("b", "noop", "a")], "dependency cycle"),
        "agent": ([step("a", "teleport")], "step a: unknown agent 'teleport'"),
        "condition": ([step("a", when="steps.a.output ==")], "step a: condition does not parse"),
        "dependency": ([step("a", "noop", "ghost")], "step a: depends on unknown step 'ghost'"),
        "duplicate": ([step("a"), step("a")], "step a: duplicate id"),
    }
    for name, (steps, message) in cases.items():
        response = await api.post("/api/playbooks", json={"id": "bad", "name": "bad", "steps": steps})
        assert response.status_code == 422, name
        assert message in response.json()["detail"], (name, response.json())
    unknown = await api.post("/api/incidents", json={"title": "t", "service": "s", "playbook_id": "nope"})
    assert unknown.status_code == 422 and "playbook nope does not exist" in unknown.json()["detail"]


async def test_playbook_versions_are_pinned(api, temporal_client, engine):
    first = await run_playbook(api, [sleep("only", 1)])
    playbook_id = first["incident_type"]
    stored = await api.post(
        "/api/playbooks",
        json={"id": playbook_id, "name": "v2", "incident_type": playbook_id, "steps": [step("changed")]},
    )
    assert stored.json()["version"] == 2
    outcome, state = await wait_for_workflow(temporal_client, first["workflow_id"])
    assert [s.step_id for s in state.steps] == ["only"]  # the running incident kept version 1
    second = await create_incident(api, incident_type=playbook_id)
    _, state2 = await wait_for_workflow(temporal_client, second["workflow_id"])
    assert [s.step_id for s in state2.steps] == ["changed"] and state2.playbook_version == 2
    assert (await api.get(f"/api/playbooks/{playbook_id}", params={"version": 1})).json()["steps"][0]["id"] == "only"


async def test_retry_through_the_agent_monitor_cli(server, api, temporal_client, engine, settings):
    settings.retry_window_seconds = 600
    incident = await run_playbook(api, [sleep("stuck", 30, timeout_seconds=1, retry={"max_attempts": 1})])
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: workflow_status(engine, workflow_id) == "failed", what="the step to fail")
    token = (await api.post("/api/me/tokens", json={"name": "cli"})).json()["token"]
    env = {**os.environ, "AGENT_MONITOR_URL": server, "AGENT_MONITOR_TOKEN": token}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cli.main", "workflow", *args]
        return await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=60)

    bad_json = await cli("retry", str(incident["id"]), "--step", "stuck", "--params", "{nope")
    assert bad_json.returncode == 1 and bad_json.stderr.startswith("error: --params is not JSON")
    refused = await cli("retry", str(incident["id"]), "--step", "ghost")
    assert refused.returncode == 1 and "step ghost: no such step" in refused.stderr
    done = await cli("retry", str(incident["id"]), "--step", "stuck", "--params", '{"seconds": 0.1}')
    assert done.returncode == 0, done.stderr
    assert f"{workflow_id}: in_progress" in done.stdout or f"{workflow_id}: failed" in done.stdout
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"


async def test_params_get_variables_and_incident_fields_by_substitution_only(api, temporal_client, engine):
    incident = await run_playbook(
        api,
        [step("say", params={"summary": "restart ${incident.service} in ${vars.region}/${region} {{ 7*7 }} ${nope}"})],
        variables={"region": "eu-1"},
    )
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    assert state.steps[0].output["summary"] == "restart checkout in eu-1/eu-1 {{ 7*7 }} ${nope}"
