"""POST/GET /api/incidents on the real app, real Postgres and real Temporal."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from core.tables import Incident
from tests.factories import create_incident, incident_payload, wait_for_workflow


def count_incidents(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(Incident)).one()


async def test_missing_title_is_422_naming_the_field_and_writes_nothing(api, engine):
    payload = incident_payload()
    del payload["title"]
    response = await api.post("/api/incidents", json=payload)
    assert response.status_code == 422
    assert response.json()["detail"] == "title: Field required"
    assert count_incidents(engine) == 0


async def test_unknown_severity_is_422(api, engine):
    response = await api.post("/api/incidents", json=incident_payload(severity="P9"))
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "severity", "message": "Input should be 'P1', 'P2', 'P3' or 'P4'"}]
    assert count_incidents(engine) == 0


async def test_100kb_title_is_422_without_echoing_it(api, engine):
    response = await api.post("/api/incidents", json=incident_payload(title="x" * 100_000))
    assert response.status_code == 422
    assert response.json()["detail"] == "title: String should have at most 200 characters"
    assert len(response.content) < 1000
    assert count_incidents(engine) == 0


async def test_other_bad_fields_get_clear_messages(api, engine):
    cases = {
        "service_url": ("file:///etc/passwd", "service_url must be an absolute http:// or https:// URL"),
        "title": ("   ", "title must not be blank"),
        "service": ("bad service name!", "String should match pattern"),
    }
    for field, (value, message) in cases.items():
        response = await api.post("/api/incidents", json=incident_payload(**{field: value}))
        assert response.status_code == 422, field
        assert response.json()["errors"][0]["field"] == field
        assert message in response.json()["detail"]
    not_json = await api.post("/api/incidents", content=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert count_incidents(engine) == 0


async def test_oversized_body_is_413(api, engine):
    response = await api.post("/api/incidents", content=b"x" * 1_500_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]

    async def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(30):
            yield b"x" * 65_536

    chunked = await api.post("/api/incidents", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and "larger than" in chunked.json()["detail"]
    assert count_incidents(engine) == 0


async def test_repeated_create_with_same_idempotency_key_makes_one_incident(api, engine, temporal_client, worker):
    headers = {"Idempotency-Key": "alert-123"}
    first, *rest = await asyncio.gather(
        *[api.post("/api/incidents", json=incident_payload(), headers=headers) for _ in range(5)]
    )
    responses = [first, *rest]
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert count_incidents(engine) == 1
    outcome, _ = await wait_for_workflow(temporal_client, first.json()["workflow_id"])
    assert outcome == "failed"  # no service URL: verify cannot confirm recovery


async def test_unknown_incident_is_404(api):
    response = await api.get("/api/incidents/424242")
    assert response.status_code == 404
    assert response.json() == {"detail": "incident 424242 does not exist"}
    assert (await api.get("/api/incidents/abc")).status_code == 422


async def test_list_filters_and_paginates(api, temporal_client, worker, service):
    url, _ = service
    made = [
        await create_incident(api, service_url=url, severity="P1", service="api"),
        await create_incident(api, service_url=url, severity="P2", service="db"),
        await create_incident(api, service_url=url, severity="P1", service="db"),
    ]
    page = (await api.get("/api/incidents", params={"limit": 2})).json()
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == [made[2]["id"], made[1]["id"]]
    p1 = (await api.get("/api/incidents", params={"severity": "P1", "service": "db"})).json()
    assert [i["id"] for i in p1["items"]] == [made[2]["id"]]
    bad = await api.get("/api/incidents", params={"severity": "urgent"})
    assert bad.status_code == 422 and "severity" in bad.json()["errors"][0]["field"]
    for incident in made:
        await wait_for_workflow(temporal_client, incident["workflow_id"])


async def test_detail_page_shows_steps_and_escapes_untrusted_text(api, temporal_client, worker, service):
    url, _ = service
    incident = await create_incident(api, service_url=url, title="<script>alert(1)</script> broke")
    await wait_for_workflow(temporal_client, incident["workflow_id"])

    page = await api.get(f"/incidents/{incident['id']}")
    assert page.status_code == 200
    html = page.text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; broke" in html
    for step in ("monitor", "investigate", "remediate", "verify"):
        assert f'data-step="{step}"' in html
    assert "verified: checkout answers HTTP 200" in html
    assert f"/namespaces/default/workflows/incident-{incident['id']}" in html

    listing = await api.get("/")
    assert listing.status_code == 200 and f"/incidents/{incident['id']}" in listing.text
    assert (await api.get("/incidents/999999999999")).status_code == 404


@pytest.mark.parametrize("through", ["api", "form"])
async def test_new_incident_whose_workflow_id_has_old_history_is_409(api, engine, temporal_client, settings, through):
    """A database reset under a kept Temporal history must not silently attach to an old workflow: the API and the
    new-incident form answer it alike (the form answered 500)."""
    from sqlalchemy import text

    from core.payloads import IncidentContext, IncidentWorkflowInput
    from core.playbook import default_playbook

    with engine.connect() as conn:
        next_id = conn.execute(text("SELECT last_value FROM incidents_id_seq")).scalar_one()
    old = await temporal_client.start_workflow(
        "IncidentWorkflow",
        IncidentWorkflowInput(
            incident=IncidentContext(next_id, "old", "old", "P4"), playbook=default_playbook().model_dump(mode="json")
        ),
        id=f"incident-{next_id}",
        task_queue=f"{settings.task_queue}-nobody",
    )
    await asyncio.sleep(2.5)
    if through == "api":
        response = await api.post("/api/incidents", json=incident_payload())
        detail = response.json()["detail"]
    else:
        form = {"title": "checkout down", "service": "checkout", "severity": "P2"}
        response = await api.post("/incidents/new", data=form)
        detail = response.text
    assert response.status_code == 409, response.text[:300]
    assert f"workflow incident-{next_id} already exists" in detail
    await old.terminate("test over")


async def test_incident_lifecycle_is_a_state_machine_with_clear_409s(api, client_as):
    incident = (await api.post("/api/incidents", json=incident_payload())).json()
    path = f"/api/incidents/{incident['id']}/status"
    closed_too_early = await api.post(path, json={"status": "closed"})
    assert closed_too_early.status_code == 409
    assert closed_too_early.json()["detail"] == (
        f"incident {incident['id']} is open: it can go to in_progress, resolved, not closed"
    )
    steps = ["in_progress", "resolved", "closed", "reopened", "in_progress", "resolved"]
    for target in steps:
        moved = await api.post(path, json={"status": target, "comment": "by hand"})
        assert moved.status_code == 200, (target, moved.text)
        assert moved.json()["status"] == target
    final = moved.json()
    assert final["acknowledged_at"] and final["resolved_at"] and final["closed_at"] is None
    assert (await api.post(path, json={"status": "paused"})).status_code == 422
    viewer = await client_as("viewer")
    assert (await viewer.post(path, json={"status": "closed"})).status_code == 403
    audit = (await api.get("/api/audit", params={"action": "incident.status"})).json()["items"]
    assert [e["after"]["status"] for e in reversed(audit)] == steps


async def test_a_started_workflow_is_known_before_its_first_projection_row(api, engine):
    """The first agent writes the workflow's row with its own step: until then (here: no worker runs it), the
    API still knows the workflow by its incident: the live state says pending, instead of a 404."""
    from core.tables import WorkflowRun

    incident = await create_incident(api)
    workflow_id = incident["workflow_id"]
    with Session(engine) as session:
        assert session.get(WorkflowRun, workflow_id) is None
    state = await api.get(f"/api/workflows/{workflow_id}")
    assert state.status_code == 200, state.text
    assert state.json()["status"] == "pending" and state.json()["live"] is False
    assert "no projection yet" in state.json()["reason"]
    contexts = await api.get(f"/api/workflows/{workflow_id}/steps/monitor/contexts")
    assert contexts.status_code == 200 and contexts.json() == []
    assert (await api.get("/api/workflows/incident-999999999")).status_code == 404


async def test_a_create_answers_the_new_incident_as_a_read_of_it_shows_it(api, engine):
    """The 201 is built from what the request wrote (no second read): the same fields, run and links as GET
    answers while nothing has run yet (here no worker runs it); a repeat under its key is read as it is now."""
    payload = incident_payload(title="answered as written", severity="P2", service="checkout")
    created = await api.post("/api/incidents", json=payload, headers={"Idempotency-Key": "as-written"})
    assert created.status_code == 201, created.text
    read = await api.get(f"/api/incidents/{created.json()['id']}")
    assert created.json() == read.json()
    assert created.json()["workflow"]["status"] == "pending" and created.json()["workflow"]["steps"] == []
    assert created.json()["title"] == "answered as written" and created.json()["links"] == []

    acknowledged = await api.post(f"/api/incidents/{created.json()['id']}/acknowledge")
    assert acknowledged.status_code == 200 and created.json()["acknowledged_at"] is None
    repeat = await api.post("/api/incidents", json=payload, headers={"Idempotency-Key": "as-written"})
    assert repeat.status_code == 200
    assert repeat.json()["acknowledged_at"] == acknowledged.json()["acknowledged_at"] is not None
