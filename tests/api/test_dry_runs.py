"""The dry runs API (issue 23): who may start one, what a bad request is told (the field named), an Idempotency-Key
repeat, reading one and a playbook's recent ones. The run itself: tests/workflows/test_dry_run.py."""

from __future__ import annotations

import pytest
from sqlmodel import Session, func, select

from core.tables import PlaybookDryRun

PLAYBOOK = {
    "id": "api-dry",
    "name": "API dry run",
    "variables": {"region": {"type": "string", "default": "eu-1"}, "replicas": {"type": "integer", "default": 2}},
    "steps": [{"id": "only", "agent": "noop", "instructions": "in ${region}, ${replicas} replicas"}],
}


@pytest.fixture
async def stored(api) -> None:
    assert (await api.post("/api/playbooks", json=PLAYBOOK)).status_code == 201


async def test_a_responder_starts_one_and_a_repeat_with_the_same_key_answers_it(api, client_as, engine, stored):
    responder = await client_as("responder", "rita")
    headers = {"Idempotency-Key": "dry-1"}
    first = await responder.post(
        "/api/playbooks/api-dry/dry-runs", json={"variables": {"replicas": "3"}}, headers=headers
    )
    assert first.status_code == 202, first.text
    dry = first.json()
    assert dry["dry_run"] is True and dry["status"] == "running" and dry["variables"] == {"replicas": "3"}
    assert first.headers["Location"] == f"/api/dry-runs/{dry['id']}" and dry["url"] == f"/dry-runs/{dry['id']}"
    again = await responder.post("/api/playbooks/api-dry/dry-runs", json={}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == dry["id"]
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(PlaybookDryRun)).one() == 1
    read = await responder.get(f"/api/dry-runs/{dry['id']}")
    assert read.status_code == 200 and read.json()["workflow_id"] == f"dry-run-{dry['id']}"
    recent = (await responder.get("/api/playbooks/api-dry/dry-runs")).json()
    assert [r["id"] for r in recent] == [dry["id"]] and "state" not in recent[0]
    audit = (await api.get("/api/audit", params={"target_type": "playbook", "target_id": "api-dry"})).json()
    assert "playbook.dry_run" in [row["action"] for row in audit["items"]]


async def test_a_viewer_may_not_start_one(client_as, stored):
    viewer = await client_as("viewer", "vic")
    refused = await viewer.post("/api/playbooks/api-dry/dry-runs", json={})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"variables": {"zone": "a"}}, "variables.vars.zone: not a variable of this playbook"),
        ({"variables": {"replicas": "many"}}, "variables.vars.replicas: 'many' is not an integer"),
        ({"incident_id": 999_999}, "incident_id: incident 999999 does not exist"),
        ({"sample": {"service": "has space"}}, "sample.service"),
        ({"version": 7}, "version"),
    ],
)
async def test_a_bad_request_names_its_field(api, stored, body, field):
    refused = await api.post("/api/playbooks/api-dry/dry-runs", json=body)
    assert refused.status_code in (404, 422), refused.text
    assert field in refused.text


async def test_unknown_ones_are_not_found(api):
    assert (await api.post("/api/playbooks/nope/dry-runs", json={})).status_code == 404
    assert (await api.get("/api/dry-runs/424242")).status_code == 404
