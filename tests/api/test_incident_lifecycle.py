"""POST /api/incidents/{id}/status: the state machine, its timestamps, and what reopening does to the playbook run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
from sqlmodel import Session
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.tables import INCIDENT_TRANSITIONS, Incident, WorkflowRun
from tests.api.incident_rows import insert_incident
from tests.factories import create_incident, wait_for_workflow
from worker.runner import incident_worker

STATUSES = ("open", "in_progress", "resolved", "closed", "reopened")


def workflow_runs(engine, incident_id: int) -> int:
    with Session(engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        return incident.workflow_runs


async def manual_type(api: httpx.AsyncClient, incident_type: str = "manual") -> str:
    """An incident type whose reopen leaves the playbook alone, so moves start no workflow."""
    response = await api.put(f"/api/incident-templates/{incident_type}", json={"on_reopen": "none"})
    assert response.status_code == 200, response.text
    return incident_type


async def move(api: httpx.AsyncClient, incident_id: int, target: str, comment: str = "") -> httpx.Response:
    return await api.post(f"/api/incidents/{incident_id}/status", json={"status": target, "comment": comment})


async def wait_until(api: httpx.AsyncClient, incident_id: int, check, timeout: float = 20) -> dict:
    """Poll the incident until check(detail) holds; the projection lands just after the workflow's own steps."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        detail = (await api.get(f"/api/incidents/{incident_id}")).json()
        if check(detail):
            return detail
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"incident {incident_id} never got there: {detail}")
        await asyncio.sleep(0.05)


async def status_events(api: httpx.AsyncClient, incident_id: int) -> list[tuple[str, str]]:
    items = (await api.get(f"/api/incidents/{incident_id}/timeline")).json()["items"]
    return [(e["data"]["actor"], e["data"]["status"]) for e in items if e["kind"] == "incident.status"]


async def workflow_exists(temporal: Client, workflow_id: str) -> bool:
    try:
        await temporal.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_every_move_of_the_state_machine_is_allowed_or_a_409_naming_the_allowed_ones(api, engine):
    incident_type = await manual_type(api)
    for source in STATUSES:
        allowed = INCIDENT_TRANSITIONS[source]
        for target in STATUSES:
            incident_id = insert_incident(engine, status=source, incident_type=incident_type)
            response = await move(api, incident_id, target)
            if target in allowed:
                assert response.status_code == 200, (source, target, response.text)
                assert response.json()["status"] == target
            else:
                assert response.status_code == 409, (source, target, response.text)
                assert response.json()["detail"] == (
                    f"incident {incident_id} is {source}: it can go to {', '.join(allowed)}, not {target}"
                )
                detail = (await api.get(f"/api/incidents/{incident_id}")).json()
                assert detail["status"] == source  # a refused move changes nothing


async def test_timestamps_follow_the_moves_and_reopen_clears_resolution(api, engine):
    incident_id = insert_incident(engine, incident_type=await manual_type(api))

    def at(detail: dict, field: str) -> datetime | None:
        return datetime.fromisoformat(detail[field]) if detail[field] else None

    acked = (await move(api, incident_id, "in_progress", "looking")).json()
    acknowledged = at(acked, "acknowledged_at")
    assert acknowledged is not None and acked["resolved_at"] is None and acked["closed_at"] is None

    resolved = (await move(api, incident_id, "resolved")).json()
    assert at(resolved, "resolved_at") and at(resolved, "acknowledged_at") == acknowledged

    closed = (await move(api, incident_id, "closed")).json()
    assert at(closed, "closed_at") and at(closed, "resolved_at") == at(resolved, "resolved_at")
    assert at(closed, "updated_at") >= at(resolved, "updated_at")  # type: ignore[operator]

    reopened = (await move(api, incident_id, "reopened", "it came back")).json()
    assert reopened["resolved_at"] is None and reopened["closed_at"] is None
    assert at(reopened, "acknowledged_at") == acknowledged  # first acknowledgement is kept

    again = (await move(api, incident_id, "in_progress")).json()
    assert at(again, "acknowledged_at") == acknowledged
    final = (await move(api, incident_id, "resolved")).json()
    assert final["resolved_at"] and final["closed_at"] is None

    assert await status_events(api, incident_id) == [
        ("root", s) for s in ("in_progress", "resolved", "closed", "reopened", "in_progress", "resolved")
    ]
    timeline = (await api.get(f"/api/incidents/{incident_id}/timeline")).json()["items"]
    reopen = next(e for e in timeline if e["kind"] == "incident.status" and e["data"]["status"] == "reopened")
    assert reopen["data"]["comment"] == "it came back" and reopen["data"]["previous"] == "closed"
    assert reopen["data"]["playbook"] == "none"


async def test_unknown_incident_bad_status_and_roles(api, engine, client_as):
    assert (await move(api, 987654321, "resolved")).json() == {"detail": "incident 987654321 does not exist"}
    assert (await move(api, 987654321, "resolved")).status_code == 404
    incident_id = insert_incident(engine, incident_type=await manual_type(api))
    bad = await move(api, incident_id, "paused")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
    long_comment = await move(api, incident_id, "resolved", "x" * 2001)
    assert long_comment.status_code == 422

    viewer = await client_as("viewer")
    refused = await viewer.post(f"/api/incidents/{incident_id}/status", json={"status": "resolved"})
    assert refused.status_code == 403 and "responder" in refused.json()["detail"]
    assert (await api.get(f"/api/incidents/{incident_id}")).json()["status"] == "open"

    responder = await client_as("responder", "alice")
    moved = await responder.post(f"/api/incidents/{incident_id}/status", json={"status": "resolved"})
    assert moved.status_code == 200 and moved.json()["status"] == "resolved"
    assert await status_events(api, incident_id) == [("alice", "resolved")]


async def test_workflow_moves_the_incident_to_in_progress_then_resolved(api, temporal_client, worker, service):
    url, _ = service
    incident = await create_incident(api, service_url=url)
    assert incident["status"] == "open"
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    detail = await wait_until(api, incident["id"], lambda d: d["status"] == "resolved")
    assert detail["resolved_at"]
    assert detail["acknowledged_at"] is None  # only a person acknowledges: the workflow starting work does not
    assert await status_events(api, incident["id"]) == [("workflow", "in_progress"), ("workflow", "resolved")]


async def test_acknowledging_is_a_persons_act_kept_once(api, engine, client_as):
    incident_id = insert_incident(engine, incident_type=await manual_type(api))
    viewer = await client_as("viewer")
    assert (await viewer.post(f"/api/incidents/{incident_id}/acknowledge")).status_code == 403
    responder = await client_as("responder", "alice")
    first = await responder.post(f"/api/incidents/{incident_id}/acknowledge")
    assert first.status_code == 200 and first.json()["acknowledged_at"]
    again = await api.post(f"/api/incidents/{incident_id}/acknowledge")  # a repeat keeps the first time
    assert again.status_code == 200 and again.json()["acknowledged_at"] == first.json()["acknowledged_at"]
    assert again.json()["status"] == "open"  # acknowledging is not starting work
    events = (await api.get(f"/api/incidents/{incident_id}/timeline")).json()["items"]
    assert [(e["data"]["actor"], e["kind"]) for e in events if e["kind"] == "incident.acknowledged"] == [
        ("alice", "incident.acknowledged")
    ]
    assert (await move(api, incident_id, "resolved")).status_code == 200
    late = await api.post(f"/api/incidents/{incident_id}/acknowledge")
    assert late.status_code == 409 and "nothing to acknowledge" in late.json()["detail"]
    page = await api.post(f"/incidents/{incident_id}/acknowledge", headers={"referer": "http://testserver/x"})
    assert page.status_code == 409 and "nothing to acknowledge" in page.text


async def test_a_human_decision_is_not_undone_by_the_running_workflow(api, engine, temporal_client, settings, service):
    url, _ = service
    # No worker yet: the workflow is started but cannot move before the human does.
    incident = await create_incident(api, service_url=url)
    assert (await move(api, incident["id"], "resolved", "fixed by hand")).status_code == 200
    closed = (await move(api, incident["id"], "closed")).json()
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
        assert outcome == "completed"
        detail = await wait_until(api, incident["id"], lambda d: d["workflow"]["status"] == "completed")
    assert detail["status"] == "closed"
    assert detail["resolved_at"] == closed["resolved_at"] and detail["closed_at"] == closed["closed_at"]
    assert await status_events(api, incident["id"]) == [("root", "resolved"), ("root", "closed")]


async def test_reopen_restarts_the_playbook_as_a_new_workflow(api, engine, temporal_client, worker, service):
    url, _ = service
    incident = await create_incident(api, service_url=url)
    first = incident["workflow_id"]
    await wait_for_workflow(temporal_client, first)
    await wait_until(api, incident["id"], lambda d: d["status"] == "resolved")

    reopened = await move(api, incident["id"], "reopened", "paged again")
    assert reopened.status_code == 200, reopened.text
    body = reopened.json()
    assert body["workflow_id"] == f"{first}-run2"
    assert body["status"] in ("reopened", "in_progress") and body["resolved_at"] is None
    assert workflow_runs(engine, incident["id"]) == 2

    outcome, state = await wait_for_workflow(temporal_client, f"{first}-run2")
    assert outcome == "completed" and state.incident_id == incident["id"]
    detail = await wait_until(
        api, incident["id"], lambda d: d["status"] == "resolved" and d["workflow"]["status"] == "completed"
    )
    assert detail["workflow"]["workflow_id"] == f"{first}-run2"
    assert [s["status"] for s in detail["workflow"]["steps"]] == ["completed"] * 4
    assert detail["resolved_at"] > body["updated_at"]
    assert await status_events(api, incident["id"]) == [
        ("workflow", "in_progress"),
        ("workflow", "resolved"),
        ("root", "reopened"),
        ("workflow", "in_progress"),
        ("workflow", "resolved"),
    ]
    # The first run's history is untouched.
    assert (await temporal_client.get_workflow_handle(first).describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_reopen_of_a_type_whose_template_says_none_starts_no_workflow(
    api, engine, temporal_client, worker, service
):
    url, _ = service
    incident = await create_incident(api, service_url=url, incident_type=await manual_type(api, "noisy"))
    await wait_for_workflow(temporal_client, incident["workflow_id"])
    await wait_until(api, incident["id"], lambda d: d["status"] == "resolved")

    reopened = await move(api, incident["id"], "reopened")
    assert reopened.status_code == 200
    assert reopened.json()["status"] == "reopened"
    assert reopened.json()["workflow_id"] == incident["workflow_id"]
    assert workflow_runs(engine, incident["id"]) == 1
    assert not await workflow_exists(temporal_client, f"{incident['workflow_id']}-run2")
    assert (await api.get(f"/api/incidents/{incident['id']}")).json()["status"] == "reopened"


async def test_reopen_of_a_failed_run_with_resume_retries_it_in_place(
    api, engine, temporal_client, worker, service, settings
):
    url, state = service
    state.status = 500
    settings.retry_window_seconds = 60  # the failed run waits for a retry instead of ending
    put = await api.put("/api/incident-templates/flaky", json={"on_reopen": "resume"})
    assert put.status_code == 200
    incident = await create_incident(api, service_url=url, incident_type="flaky")
    await wait_until(api, incident["id"], lambda d: d["workflow"]["status"] == "failed")
    assert (await move(api, incident["id"], "resolved", "giving up for now")).status_code == 200

    state.status = 200
    reopened = await move(api, incident["id"], "reopened")
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["workflow_id"] == incident["workflow_id"]  # the same run, resumed
    outcome, final = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    assert any(change["kind"] == "retry_step" and change["actor"] == "root" for change in final.changes)
    await wait_until(api, incident["id"], lambda d: d["status"] == "resolved")
    assert workflow_runs(engine, incident["id"]) == 1
    assert not await workflow_exists(temporal_client, f"{incident['workflow_id']}-run2")


async def test_resume_of_a_run_that_has_ended_after_all_restarts_it(api, engine, temporal_client, worker, service):
    """The projection still says "failed, waiting" but the run has ended: the reopen restarts, no 503."""
    url, state = service
    state.status = 500
    assert (await api.put("/api/incident-templates/flaky", json={"on_reopen": "resume"})).status_code == 200
    incident = await create_incident(api, service_url=url, incident_type="flaky")
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "failed"
    await wait_until(api, incident["id"], lambda d: d["workflow"]["finished_at"] is not None)
    with Session(engine) as session:  # the projection lags behind the run's end
        run = session.get(WorkflowRun, incident["workflow_id"])
        assert run is not None
        run.finished_at = None
        session.add(run)
        session.commit()
    assert (await move(api, incident["id"], "resolved")).status_code == 200

    state.status = 200
    reopened = await move(api, incident["id"], "reopened")
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["workflow_id"] == f"{incident['workflow_id']}-run2"
    outcome, _ = await wait_for_workflow(temporal_client, f"{incident['workflow_id']}-run2")
    assert outcome == "completed"
    await wait_until(api, incident["id"], lambda d: d["status"] == "resolved")
    assert workflow_runs(engine, incident["id"]) == 2


async def test_two_simultaneous_reopens_make_one_move_and_one_409(api, engine, temporal_client, worker, service):
    url, _ = service
    incident = await create_incident(api, service_url=url)
    await wait_for_workflow(temporal_client, incident["workflow_id"])
    await wait_until(api, incident["id"], lambda d: d["status"] == "resolved")

    responses = await asyncio.gather(*(move(api, incident["id"], "reopened") for _ in range(2)))
    assert sorted(r.status_code for r in responses) == [200, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert refused.json()["detail"].endswith("not reopened")

    outcome, _ = await wait_for_workflow(temporal_client, f"{incident['workflow_id']}-run2")
    assert outcome == "completed"
    await wait_until(api, incident["id"], lambda d: d["status"] == "resolved")
    assert workflow_runs(engine, incident["id"]) == 2
    assert not await workflow_exists(temporal_client, f"{incident['workflow_id']}-run3")
    assert [s for _, s in await status_events(api, incident["id"])].count("reopened") == 1


async def test_reopen_of_an_incident_that_never_ran_its_playbook_starts_one(
    api, engine, temporal_client, worker, service
):
    """A row with no run of its playbook (imported, or its start failed) still gets one on reopen."""
    url, _ = service
    incident_id = insert_incident(engine, status="closed", service_url=url, workflow_id=None)
    reopened = await move(api, incident_id, "reopened")
    assert reopened.status_code == 200, reopened.text
    workflow_id = reopened.json()["workflow_id"]
    assert workflow_id == f"incident-{incident_id}-run2"
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    await wait_until(api, incident_id, lambda d: d["status"] == "resolved")


async def test_an_aborted_run_puts_its_incident_back_to_open(api, temporal_client, worker):
    """Issue 19, finding 9: aborting left the incident `in_progress`, as if something still worked on it."""
    incident_type = f"t-{uuid.uuid4().hex[:10]}"
    steps = [{"id": "hold", "agent": "sleep", "params": {"seconds": 60}}]
    playbook = {"id": incident_type, "name": "slow", "incident_type": incident_type, "steps": steps}
    assert (await api.post("/api/playbooks", json=playbook)).status_code == 201
    incident = await create_incident(api, incident_type=incident_type)
    await wait_until(api, incident["id"], lambda d: d["status"] == "in_progress")
    aborted = await api.post(f"/api/workflows/{incident['workflow_id']}/abort", json={"reason": "wrong playbook"})
    assert aborted.status_code == 200, aborted.text
    detail = await wait_until(api, incident["id"], lambda d: d["status"] == "open")
    assert detail["workflow"]["status"] == "cancelled" and detail["resolved_at"] is None
    assert await status_events(api, incident["id"]) == [("workflow", "in_progress"), ("workflow", "open")]
