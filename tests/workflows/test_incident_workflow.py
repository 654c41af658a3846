"""IncidentWorkflow end to end: real Temporal dev server, real worker, real Postgres, real HTTP peers."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import Session, select

from core.payloads import WorkflowState
from core.tables import Incident, WorkflowRun, WorkflowStep
from tests.factories import create_incident, wait_for_workflow
from tests.peers import closed_port_url

pytestmark = pytest.mark.usefixtures("worker")


async def test_healthy_service_runs_all_four_steps_with_outputs_chained(api, temporal_client, engine, service):
    url, peer = service
    incident = await create_incident(api, service_url=url)
    assert incident["workflow"]["workflow_id"] == f"incident-{incident['id']}"

    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])

    assert outcome == "completed"
    assert state.status == "completed"
    assert [(s.step_id, s.status) for s in state.steps] == [
        ("monitor", "completed"),
        ("investigate", "completed"),
        ("remediate", "completed"),
        ("verify", "completed"),
    ]
    monitor, investigate, remediate, verify = state.steps
    assert monitor.output["data"]["check"]["status_code"] == 200
    # investigate summarises exactly what monitor observed; remediate carries the diagnosis on.
    assert investigate.output["data"]["observed"] == monitor.output["data"]["check"]
    assert remediate.output["data"]["diagnosis"] == investigate.output["data"]["diagnosis"]
    assert remediate.output["data"]["action"] == "none"
    assert verify.output["ok"] is True
    assert peer.hits == 2  # monitor and verify each did one real GET

    with Session(engine) as session:
        stored = session.get(Incident, incident["id"])
        assert stored.status == "resolved" and stored.resolved_at is not None
        run = session.get(WorkflowRun, incident["workflow_id"])
        assert run.status == "completed" and run.finished_at is not None and run.current_steps == []
        steps = session.exec(select(WorkflowStep).order_by(WorkflowStep.position)).all()
        assert [s.status for s in steps] == ["completed"] * 4
        # Each step's recorded input is the previous step's output.
        for before, after in zip(steps, steps[1:], strict=False):
            assert after.input["previous_agent_output"] == before.output
        assert steps[0].input["previous_agent_output"] is None

    detail = (await api.get(f"/api/incidents/{incident['id']}")).json()
    assert detail["status"] == "resolved"
    assert detail["workflow"]["status"] == "completed"
    assert [s["status"] for s in detail["workflow"]["steps"]] == ["completed"] * 4
    assert detail["workflow"]["temporal_ui_url"].endswith(f"/namespaces/default/workflows/incident-{incident['id']}")


async def test_down_service_is_reported_by_monitor_and_fails_verify(api, temporal_client, engine):
    incident = await create_incident(api, service_url=closed_port_url(), severity="P1")

    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])

    assert outcome == "failed"  # also Failed in the Temporal UI
    monitor, investigate, remediate, verify = state.steps
    assert monitor.status == "completed"
    assert monitor.output["ok"] is False
    assert monitor.output["data"]["check"]["error_kind"] == "refused"
    assert "DOWN" in monitor.output["summary"]
    assert "nothing is listening" in investigate.output["data"]["diagnosis"]
    assert verify.status == "failed"
    assert "still down" in verify.error
    assert verify.output["data"]["checks"] == {"done": 2, "allowed": 2}  # VERIFY_CHECKS=2 in tests
    assert state.status == "failed" and "verify" in state.error

    detail = (await api.get(f"/api/incidents/{incident['id']}")).json()
    assert detail["workflow"]["status"] == "failed"
    assert detail["status"] == "in_progress"  # not resolved: a human has to look
    assert detail["workflow"]["steps"][3]["status"] == "failed"


async def test_server_error_is_diagnosed_as_server_side_failure(api, temporal_client, service):
    url, peer = service
    peer.status = 503
    incident = await create_incident(api, service_url=url)

    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])

    assert outcome == "failed"
    assert state.steps[0].output["data"]["check"]["status_code"] == 503
    assert "HTTP 503" in state.steps[1].output["data"]["diagnosis"]
    assert "server-side failure" in state.steps[1].output["data"]["diagnosis"]


async def test_service_recovering_during_the_run_verifies_ok(api, temporal_client, service):
    """Monitor sees 503; by the time verify re-checks, the service answers 200: the workflow completes."""
    url, peer = service
    peer.script = [503]
    incident = await create_incident(api, service_url=url)

    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])

    assert state.steps[0].output["ok"] is False
    assert outcome == "completed"
    assert state.steps[3].output["ok"] is True
    assert (await api.get(f"/api/incidents/{incident['id']}")).json()["status"] == "resolved"


async def test_workflow_is_searchable_by_incident_id(api, temporal_client, service):
    url, _ = service
    incident = await create_incident(api, service_url=url, service="payments", severity="P1")
    await wait_for_workflow(temporal_client, incident["workflow_id"])

    found = []
    for _ in range(100):  # visibility is eventually consistent
        found = [w async for w in temporal_client.list_workflows(f'IncidentId="{incident["id"]}"')]
        if found:
            break
        await asyncio.sleep(0.1)
    assert [w.id for w in found] == [incident["workflow_id"]]
    attrs = {key.name: value for key, value in found[0].typed_search_attributes if key.name != "BuildIds"}
    assert attrs == {
        "IncidentId": str(incident["id"]),
        "Service": "payments",
        "Severity": "P1",
        "IncidentType": "default",
        "PlaybookId": "default",
    }


async def test_live_status_query_answers_while_running(api, temporal_client, service):
    url, _ = service
    incident = await create_incident(api, service_url=url)
    handle = temporal_client.get_workflow_handle(incident["workflow_id"])
    state = await handle.query("status", result_type=WorkflowState)
    assert state.workflow_id == incident["workflow_id"]
    assert [s.step_id for s in state.steps] == ["monitor", "investigate", "remediate", "verify"]
    await handle.result()


async def test_secrets_in_agent_output_are_redacted_before_storage(api, temporal_client, engine, service):
    url, peer = service
    peer.status = 500
    peer.body = b"db error: could not connect to postgres://app:hunter2pw@db:5432/main (password=hunter2pw)"
    incident = await create_incident(api, service_url=url)
    _, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert "hunter2pw" not in str(state)  # redacted inside the agent, so not in Temporal history either

    with Session(engine) as session:
        stored = " ".join(str([s.input, s.output, s.error]) for s in session.exec(select(WorkflowStep)).all())
    assert "hunter2pw" not in stored
    assert "postgres://app:[REDACTED]@db:5432/main" in stored
    page = (await api.get(f"/incidents/{incident['id']}")).text
    assert "hunter2pw" not in page and "it says: db error" in page


@pytest.mark.parametrize("agents_open", [True, False], ids=["agents-open", "workflow-opens"])
async def test_the_first_projection_row_is_written_either_way(temporal_client, engine, settings, service, agents_open):
    """AGENTS_OPEN_PROJECTION=false (upgrading from workers that predate it) starts incidents whose workflow
    writes its first row itself, in a local activity of its first task; by default the first agent does."""
    from temporalio.api.enums.v1 import EventType

    from core.audit import SYSTEM
    from core.tables import IncidentCreate
    from services.incidents.open import insert_incident
    from services.incidents.start import start_incident_workflow

    url, _ = service
    settings = settings.model_copy(update={"agents_open_projection": agents_open})
    with Session(engine) as session:
        incident, _ = insert_incident(
            session=session,
            data=IncidentCreate(title="either way", service="checkout", service_url=url),
            idempotency_key=None,
            actor=SYSTEM,
            settings=settings,
        )
    await start_incident_workflow(
        temporal=temporal_client, engine=engine, incident=incident, settings=settings, fresh=True
    )
    outcome, _ = await wait_for_workflow(temporal_client, incident.workflow_id)
    assert outcome == "completed"
    history = await temporal_client.get_workflow_handle(incident.workflow_id).fetch_history()
    first_command = history.events[4].event_type  # after started, and the first task's scheduled/started/completed
    expected = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED if agents_open else EventType.EVENT_TYPE_MARKER_RECORDED
    assert first_command == expected
    with Session(engine) as session:
        run = session.get(WorkflowRun, incident.workflow_id)
        assert run is not None and run.status == "completed"
        assert session.get(Incident, incident.id).status == "resolved"
