"""GET /api/workflows/{id} on a finished workflow answers from the Postgres projection (issue 25), with everything
the `status` query would say: each step's params and approval too, secrets redacted. No worker replays the history:
the answer stands with every worker stopped."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from sqlmodel import Session

from core.redact import MASK
from core.tables import WorkflowRun, WorkflowStep
from tests.api.incident_rows import insert_incident
from tests.api.test_approvals import PARAMS, gated_incident, pending_approval
from tests.factories import wait_for_workflow
from worker.runner import incident_worker

SECRET = "hunter2-correct-horse"


async def test_a_finished_run_reads_as_the_query_said_with_secrets_redacted_and_no_worker_running(
    api, client_as, temporal_client, engine, settings
):
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        incident = await gated_incident(api, params={**PARAMS, "password": SECRET})
        approval = await pending_approval(api, incident["id"])
        approver = await client_as("approver", "alice")
        body = {"decision": "approve", "comment": "go ahead"}
        decided = await approver.post(f"/api/approvals/{approval['id']}/decision", json=body)
        assert decided.status_code == 200, decided.text
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
        assert outcome == "completed"
    # The worker is gone: a query would find no one to answer it.
    answer = await api.get(f"/api/workflows/{incident['workflow_id']}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body.pop("live") is False and body.pop("reason") == "finished (completed): its final state"

    queried = json.loads(json.dumps(dataclasses.asdict(state)))
    for internal in ("audits_changes", "projection_error"):  # the workflow's bookkeeping, not the run's state
        queried.pop(internal)
    remediate = next(s for s in queried["steps"] if s["step_id"] == "remediate")
    assert remediate["params"]["password"] == SECRET  # the query holds the real value …
    remediate["params"]["password"] = MASK  # … Postgres only ever the redacted one
    # A step's end is stamped by its agent as it returns, in the projection, and by the workflow as it hears of it,
    # in the query: the same moment, a few milliseconds apart.
    for got, want in zip(body["steps"], queried["steps"], strict=True):
        ended, heard = datetime.fromisoformat(got.pop("finished_at")), datetime.fromisoformat(want.pop("finished_at"))
        assert abs((ended - heard).total_seconds()) < 5, (got["step_id"], ended, heard)
    assert body == queried

    step = next(s for s in body["steps"] if s["step_id"] == "remediate")
    assert step["params"] == {**PARAMS, "password": MASK}
    approval = step["approval"]
    assert (approval["status"], approval["decided_by"], approval["comment"], approval["risk"]) == (
        "approved", "alice", "go ahead", "high"
    )  # fmt: skip
    assert SECRET not in answer.text


async def test_a_run_finished_before_params_were_projected_reads_them_from_its_agents_input(api, engine):
    """Rows written before migration 0022 have no params column value: the agent's input (as it was stored for the
    step page) still says what the step ran with."""
    incident_id = insert_incident(engine, title="old run", workflow_id="incident-old-run")
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(
            WorkflowRun(
                workflow_id="incident-old-run", incident_id=incident_id, status="completed", started_at=now,
                finished_at=now,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            WorkflowStep(
                workflow_id="incident-old-run", step_id="check", agent="noop", status="completed", runs=1,
                input={"step_id": "check", "params": {"url": "http://shop.internal/health"}}, started_at=now,
                finished_at=now,
            )
        )  # fmt: skip
        session.commit()
    answer = await api.get("/api/workflows/incident-old-run")
    assert answer.status_code == 200, answer.text
    assert answer.json()["reason"] == "finished (completed): its final state"
    [step] = answer.json()["steps"]
    assert step["params"] == {"url": "http://shop.internal/health"} and step["approval"] is None
