"""Playbook versions through the API (issue 23): every save a new version with author, time and message; the diff
of two versions; restore as a new version; fork under a new id with provenance; incidents pinned to their
version; two saves at once never lose one."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tests.factories import create_incident


def playbook(playbook_id: str, summary: str = "web-1 answers 503", **extra: Any) -> dict[str, Any]:
    steps = [
        {"id": "monitor", "agent": "noop", "params": {"summary": summary}},
        {"id": "verify", "agent": "noop", "depends_on": ["monitor"]},
    ]
    return {"id": playbook_id, "name": "checkout down", "incident_type": playbook_id, "steps": steps, **extra}


def new_id() -> str:
    return f"pb-{uuid.uuid4().hex[:10]}"


async def save(api, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    answer = await api.post("/api/playbooks", json=body)
    assert answer.status_code == status, answer.text
    return answer.json()


async def audit(api, action: str) -> list[dict[str, Any]]:
    answer = await api.get("/api/audit", params={"action": action, "target_type": "playbook"})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


async def test_every_save_is_a_version_with_its_author_time_and_message(api):
    pid = new_id()
    first = await save(api, playbook(pid) | {"message": "first cut"})
    assert (first["version"], first["saved"]["by"], first["saved"]["message"]) == (1, "root", "first cut")
    assert first["syntax"] == 2  # a new save through the API: {{…}} placeholders work (core.playbook.new_playbook)
    await save(api, playbook(pid, "web-1 answers 502") | {"message": "  502, not 503  "})
    await save(api, playbook(pid, "web-1 answers 504"))  # no message: none stored
    versions = (await api.get(f"/api/playbooks/{pid}/versions")).json()
    assert [(v["version"], v["author"], v["message"]) for v in versions] == [
        (1, "root", "first cut"),
        (2, "root", "502, not 503"),
        (3, "root", None),
    ]
    assert all(v["created_at"] and v["forked_from"] is None for v in versions)
    # The old versions are still there, as they were.
    old = (await api.get(f"/api/playbooks/{pid}", params={"version": 1})).json()
    assert old["steps"][0]["params"] == {"summary": "web-1 answers 503"} and old["saved"]["message"] == "first cut"
    assert [row["target_id"] for row in await audit(api, "playbook.create")] == [f"{pid}@1"]
    assert {row["target_id"] for row in await audit(api, "playbook.update")} == {f"{pid}@2", f"{pid}@3"}


async def test_a_message_longer_than_500_characters_is_refused_naming_the_field(api):
    pid = new_id()
    refused = await save(api, playbook(pid) | {"message": "x" * 501}, status=422)
    assert "message" in refused["detail"] and "500" in refused["detail"]
    assert (await api.get(f"/api/playbooks/{pid}")).status_code == 404  # nothing stored


async def test_a_definition_read_back_from_get_can_be_posted_again(api):
    pid = new_id()
    await save(api, playbook(pid))
    read = (await api.get(f"/api/playbooks/{pid}")).json()
    again = await save(api, read | {"message": "unchanged"})
    assert again["version"] == 2 and again["saved"]["message"] == "unchanged"


async def test_the_diff_of_two_versions_shows_a_changed_param_as_removed_and_added_lines(api):
    pid = new_id()
    await save(api, playbook(pid))
    await save(api, playbook(pid, "web-1 answers 502"))
    await save(api, playbook(pid, "web-1 answers 502", description="same steps, new words"))
    answer = await api.get(f"/api/playbooks/{pid}/diff", params={"a": 1, "b": 2})
    assert answer.status_code == 200, answer.text
    lines = answer.json()["lines"]
    assert lines[:2] == [f"--- {pid} v1", f"+++ {pid} v2"]
    changed = [line for line in lines[2:] if line[:1] in "+-"]
    assert changed == ["-    summary: web-1 answers 503", "+    summary: web-1 answers 502"]
    other = (await api.get(f"/api/playbooks/{pid}/diff", params={"a": 2, "b": 3})).json()["lines"]
    assert [line for line in other[2:] if line[:1] in "+-"] == [
        "-description: ''",
        "+description: same steps, new words",
    ]
    # The version number itself is not a difference.
    assert (await api.get(f"/api/playbooks/{pid}/diff", params={"a": 2, "b": 2})).json()["lines"] == []
    missing = await api.get(f"/api/playbooks/{pid}/diff", params={"a": 1, "b": 9})
    assert missing.status_code == 404 and "no version 9" in missing.json()["detail"]
    assert (await api.get("/api/playbooks/nope-nope/diff", params={"a": 1, "b": 2})).status_code == 404


async def test_restore_stores_a_new_version_equal_to_the_old_one(api):
    pid = new_id()
    await save(api, playbook(pid))
    await save(api, playbook(pid, "web-1 answers 502"))
    answer = await api.post(f"/api/playbooks/{pid}/restore", json={"version": 1})
    assert answer.status_code == 201, answer.text
    restored = answer.json()
    assert restored["version"] == 3 and restored["steps"][0]["params"] == {"summary": "web-1 answers 503"}
    assert restored["saved"]["message"] == "restored from v1"
    assert (await api.get(f"/api/playbooks/{pid}/diff", params={"a": 1, "b": 3})).json()["lines"] == []
    with_message = await api.post(f"/api/playbooks/{pid}/restore", json={"version": 2, "message": "back to 502"})
    assert with_message.json()["saved"]["message"] == "back to 502"
    [row, *_] = await audit(api, "playbook.restore")
    assert (row["target_id"], row["actor"], row["before"]) == (f"{pid}@4", "root", {"version": 2})
    missing = await api.post(f"/api/playbooks/{pid}/restore", json={"version": 40})
    assert missing.status_code == 404
    assert (await api.post(f"/api/playbooks/{pid}/restore", json={"version": 0})).status_code == 422


async def test_fork_copies_any_version_under_a_new_id_with_its_provenance(api):
    pid, fork_id = new_id(), new_id()
    await save(api, playbook(pid))
    await save(api, playbook(pid, "web-1 answers 502"))
    answer = await api.post(f"/api/playbooks/{pid}/fork", json={"id": fork_id, "version": 1, "name": "my copy"})
    assert answer.status_code == 201, answer.text
    fork = answer.json()
    assert (fork["id"], fork["version"], fork["name"]) == (fork_id, 1, "my copy")
    assert fork["steps"][0]["params"] == {"summary": "web-1 answers 503"}
    assert fork["forked_from"] == {"id": pid, "version": 1}
    assert (await api.get(f"/api/playbooks/{fork_id}")).json()["forked_from"] == {"id": pid, "version": 1}
    [version] = (await api.get(f"/api/playbooks/{fork_id}/versions")).json()
    assert version["forked_from"] == {"id": pid, "version": 1} and version["message"] == f"forked from {pid} v1"
    [row, *_] = await audit(api, "playbook.fork")
    assert (row["target_id"], row["before"]) == (f"{fork_id}@1", {"id": pid, "version": 1})
    # The latest version when none is named; the source's name marked as a fork.
    latest = (await api.post(f"/api/playbooks/{pid}/fork", json={"id": f"{fork_id}-2"})).json()
    assert latest["forked_from"] == {"id": pid, "version": 2} and latest["name"] == "checkout down (fork)"
    # A taken id is a conflict, whether the fork's or the source's own.
    for taken in (fork_id, pid):
        refused = await api.post(f"/api/playbooks/{pid}/fork", json={"id": taken})
        assert refused.status_code == 409 and "taken" in refused.json()["detail"]
    bad = await api.post(f"/api/playbooks/{pid}/fork", json={"id": "Not An Id"})
    assert bad.status_code == 422
    assert (await api.post("/api/playbooks/nope-nope/fork", json={"id": new_id()})).status_code == 404


async def test_an_incident_stays_pinned_to_the_version_it_started_with(api, temporal_client, worker):
    pid = new_id()
    # The first step waits for a person: the incident is still running when version 2 is stored.
    steps = [
        {"id": "gate", "agent": "noop", "risk": "high", "params": {"summary": "v1"}},
        {"id": "verify", "agent": "noop", "depends_on": ["gate"]},
    ]
    await save(api, {"id": pid, "name": "pinned", "incident_type": pid, "steps": steps})
    incident = await create_incident(api, incident_type=pid)
    v2 = [{**steps[0], "params": {"summary": "v2"}}, steps[1]]
    await save(api, {"id": pid, "name": "pinned", "incident_type": pid, "steps": v2})
    assert await started_with(temporal_client, incident["workflow_id"]) == (1, {"summary": "v1"})
    # A new incident of the type runs version 2.
    later = await create_incident(api, incident_type=pid, service=f"svc-{uuid.uuid4().hex[:6]}")
    assert await started_with(temporal_client, later["workflow_id"]) == (2, {"summary": "v2"})
    for workflow_id in (incident["workflow_id"], later["workflow_id"]):
        await temporal_client.get_workflow_handle(workflow_id).terminate("test over")


async def started_with(temporal_client, workflow_id: str) -> tuple[int, dict[str, Any]]:
    """The playbook version and first step's params in the workflow's input, as Temporal recorded it."""
    async for event in temporal_client.get_workflow_handle(workflow_id).fetch_history_events():
        started = json.loads(event.workflow_execution_started_event_attributes.input.payloads[0].data)
        return started["playbook"]["version"], started["playbook"]["steps"][0]["params"]
    raise AssertionError("no history")


async def test_two_saves_at_once_get_consecutive_versions_and_none_is_lost(api, client_as, engine):
    pid = new_id()
    await save(api, playbook(pid))
    other = await client_as("admin")
    bodies = [playbook(pid, f"change {n}") | {"message": f"save {n}"} for n in range(6)]
    clients = [api, other] * 3
    answers = await asyncio.gather(*(c.post("/api/playbooks", json=b) for c, b in zip(clients, bodies, strict=True)))
    assert {a.status_code for a in answers} <= {201, 409}, [a.text for a in answers]
    stored = [a.json()["version"] for a in answers if a.status_code == 201]
    refused = [a.json()["detail"] for a in answers if a.status_code == 409]
    assert all("send it again" in detail for detail in refused)
    versions = (await api.get(f"/api/playbooks/{pid}/versions")).json()
    assert [v["version"] for v in versions] == list(range(1, len(stored) + 2))  # consecutive, from 1
    assert sorted(stored) == list(range(2, len(stored) + 2))
    # Every save that was answered 201 is there with its own message.
    kept = {v["message"] for v in versions[1:]}
    assert kept == {body["message"] for body, a in zip(bodies, answers, strict=True) if a.status_code == 201}


@pytest.mark.parametrize("field", ["message", "owner_team"])
async def test_a_non_string_message_or_owner_team_is_a_422(api, field):
    answer = await api.post("/api/playbooks", json=playbook(new_id()) | {field: 5})
    assert answer.status_code == 422 and field in answer.json()["detail"]
