"""verify re-checks over a window of durable timers — on the time-skipping server, so minutes take no time."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlmodel import Session
from temporalio.client import WorkflowFailureError

from core.payloads import IncidentContext, IncidentWorkflowInput, WorkflowState
from core.playbook import default_playbook
from core.tables import IncidentCreate, WorkflowRun
from services.incidents.open import insert_incident
from tests.factories import TEST_ACTOR
from worker.runner import incident_worker


async def run_incident(env, engine, settings, url: str, *, checks: int, interval: float):
    with Session(engine) as session:
        incident, _ = insert_incident(
            session=session,
            data=IncidentCreate(title="slow to come back", service="search", severity="P2", service_url=url),
            idempotency_key=None,
            actor=TEST_ACTOR,
            settings=settings.model_copy(update={"workflow_id_prefix": f"ts-{uuid.uuid4().hex[:8]}-"}),
        )
    queue = f"ts-{uuid.uuid4().hex}"
    async with incident_worker(env.client, engine, settings, task_queue=queue):
        handle = await env.client.start_workflow(
            "IncidentWorkflow",
            IncidentWorkflowInput(
                incident=IncidentContext(incident.id, incident.title, incident.service, "P2", service_url=url),
                playbook=default_playbook(verify_checks=checks, verify_interval_seconds=interval).model_dump(
                    mode="json"
                ),
            ),
            id=incident.workflow_id,
            task_queue=queue,
        )
        started_at = await env.get_current_time()
        outcome = "completed"
        try:
            await handle.result()  # the test server skips the timers while we wait
        except WorkflowFailureError:
            outcome = "failed"
        state = await handle.query("status", result_type=WorkflowState)
        skipped = (await env.get_current_time()) - started_at
    return outcome, state, skipped, incident


async def test_verify_waits_for_a_slow_recovery(time_skipping_env, engine, settings, service):
    url, peer = service
    peer.script = [503, 503, 503]  # monitor, verify #1, verify #2 fail; verify #3 sees 200
    wall = time.monotonic()

    outcome, state, skipped, incident = await run_incident(
        time_skipping_env, engine, settings, url, checks=3, interval=60
    )

    assert outcome == "completed"
    verify = state.steps[3]
    assert verify.status == "completed" and verify.output["ok"] is True
    assert verify.output["data"]["checks"] == {"done": 3, "allowed": 3}
    assert peer.hits == 4
    assert skipped.total_seconds() >= 120  # two one-minute pauses of workflow time…
    assert time.monotonic() - wall < 30  # …in a few seconds of wall time
    with Session(engine) as session:
        assert session.get(WorkflowRun, incident.workflow_id).status == "completed"


@pytest.mark.parametrize("checks", [1, 4])
async def test_verify_gives_up_after_its_checks(time_skipping_env, engine, settings, service, checks):
    url, peer = service
    peer.status = 503

    outcome, state, skipped, _ = await run_incident(
        time_skipping_env, engine, settings, url, checks=checks, interval=600
    )

    assert outcome == "failed"
    assert state.steps[3].status == "failed"
    assert state.steps[3].output["data"]["checks"] == {"done": checks, "allowed": checks}
    assert peer.hits == 1 + checks
    assert skipped.total_seconds() >= 600 * (checks - 1)
