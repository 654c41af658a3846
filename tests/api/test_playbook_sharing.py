"""Playbook sharing through the API (issue 23): an owner team and a visibility. A team-private playbook is a 404
for everyone outside the team (list, read, versions, diff, restore, fork, sharing), never a 403 that would tell its
id exists; edits (new version, restore, sharing) need an admin or a responder of the owner team; without sharing,
everyone sees a playbook and only admins change it; who may create one; list filters; every change audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import app_client
from tests.factories import make_user


def playbook(playbook_id: str, summary: str = "web-1 answers 503", **extra: Any) -> dict[str, Any]:
    steps = [{"id": "monitor", "agent": "noop", "params": {"summary": summary}}]
    return {"id": playbook_id, "name": "checkout down", "incident_type": "checkout_down", "steps": steps, **extra}


def new_id() -> str:
    return f"pb-{uuid.uuid4().hex[:10]}"


@dataclass
class People:
    admin: httpx.AsyncClient
    viewer_in: httpx.AsyncClient  # a viewer of team sre
    responder_in: httpx.AsyncClient  # a responder of team sre
    responder_out: httpx.AsyncClient  # a responder of team dba
    viewer_out: httpx.AsyncClient  # a viewer of no team


@pytest.fixture
async def people(app, engine, api):
    teams = {}
    for name in ("sre", "dba"):
        created = await api.post("/api/teams", json={"name": name})
        assert created.status_code == 201, created.text
        teams[name] = created.json()["id"]
    clients = []

    async def person(role: str, username: str, team: str | None) -> httpx.AsyncClient:
        user, token = make_user(engine, role, username=username)
        if team is not None:
            added = await api.put(f"/api/teams/{teams[team]}/members/{user.id}")
            assert added.status_code == 200, added.text
        client = app_client(app, headers={"Authorization": f"Bearer {token}"})
        clients.append(client)
        return client

    yield People(
        admin=api,
        viewer_in=await person("viewer", "vic", "sre"),
        responder_in=await person("responder", "rosa", "sre"),
        responder_out=await person("responder", "otto", "dba"),
        viewer_out=await person("viewer", "val", None),
    )
    for client in clients:
        await client.aclose()


async def stored(client: httpx.AsyncClient, body: dict[str, Any], status: int = 201, **params: str) -> dict[str, Any]:
    answer = await client.post("/api/playbooks", json=body, params=params)
    assert answer.status_code == status, answer.text
    return answer.json()


async def share(client, pid: str, owner_team: str | None, visibility: str, status: int = 200) -> dict[str, Any]:
    answer = await client.put(
        f"/api/playbooks/{pid}/sharing", json={"owner_team": owner_team, "visibility": visibility}
    )
    assert answer.status_code == status, answer.text
    return answer.json()


async def reads(client: httpx.AsyncClient, pid: str) -> list[int]:
    """The status of every read of the playbook, and whether the list shows it (200 / 404)."""
    listed = pid in [p["id"] for p in (await client.get("/api/playbooks")).json()]
    answers = [
        await client.get(f"/api/playbooks/{pid}"),
        await client.get(f"/api/playbooks/{pid}", params={"version": 1}),
        await client.get(f"/api/playbooks/{pid}/versions"),
        await client.get(f"/api/playbooks/{pid}/diff", params={"a": 1, "b": 1}),
        await client.get(f"/api/playbooks/{pid}/sharing"),
    ]
    return [200 if listed else 404, *(a.status_code for a in answers)]


async def test_a_team_private_playbook_is_a_404_outside_the_team_and_visible_inside(people):
    pid = new_id()
    await stored(people.admin, playbook(pid))
    shown = await share(people.admin, pid, "sre", "team")
    assert shown == {"owner_team": "sre", "visibility": "team", "shared": True}
    for outsider in (people.responder_out, people.viewer_out):
        assert await reads(outsider, pid) == [404] * 6
        # Writes answer the same: the id is not told to exist.
        restore = await outsider.post(f"/api/playbooks/{pid}/restore", json={"version": 1})
        fork = await outsider.post(f"/api/playbooks/{pid}/fork", json={"id": new_id()})
        answers = [restore.status_code, fork.status_code]
        assert answers == ([404, 404] if outsider is people.responder_out else [403, 403])  # viewers: the role
        assert "does not exist" in (await outsider.get(f"/api/playbooks/{pid}")).json()["detail"]
    await share(people.responder_out, pid, "dba", "everyone", status=404)
    for insider in (people.viewer_in, people.responder_in, people.admin):
        assert await reads(insider, pid) == [200] * 6
    assert (await people.viewer_in.get(f"/api/playbooks/{pid}")).json()["sharing"] == {
        "owner_team": "sre",
        "visibility": "team",
    }
    # Shared with everyone again: everyone reads it; the team still owns it.
    await share(people.responder_in, pid, "sre", "everyone")
    assert await reads(people.viewer_out, pid) == [200] * 6


async def test_edits_need_an_admin_or_a_responder_of_the_owner_team(people):
    pid = new_id()
    await stored(people.admin, playbook(pid), owner_team="sre")
    # A responder of the team: new version, restore, sharing.
    second = await stored(people.responder_in, playbook(pid, "changed") | {"message": "rosa's change"})
    assert (second["version"], second["saved"]["by"]) == (2, "rosa")
    restore = await people.responder_in.post(f"/api/playbooks/{pid}/restore", json={"version": 1})
    assert restore.status_code == 201, restore.text
    # Everyone sees it (visibility everyone), but others may not change it: 403 naming who may.
    for other, status in ((people.responder_out, 403), (people.viewer_in, 403), (people.viewer_out, 403)):
        refused = await other.post("/api/playbooks", json=playbook(pid, "forged"))
        assert refused.status_code == status, refused.text
        assert (await other.post(f"/api/playbooks/{pid}/restore", json={"version": 2})).status_code == 403
        sharing = await other.put(f"/api/playbooks/{pid}/sharing", json={"owner_team": None, "visibility": "everyone"})
        assert sharing.status_code == 403
    refused = await people.responder_out.post("/api/playbooks", json=playbook(pid, "forged"))
    assert (
        refused.json()["detail"]
        == f"you may not change playbook {pid}: admins and responders (or above) of team sre may"
    )
    viewer = await people.viewer_in.post("/api/playbooks", json=playbook(pid, "forged"))
    assert "needs the responder role" in viewer.json()["detail"]  # a viewer of the team still cannot
    assert (await stored(people.admin, playbook(pid, "admin's")))["version"] == 4
    assert [v["author"] for v in (await people.admin.get(f"/api/playbooks/{pid}/versions")).json()] == [
        "root",
        "rosa",
        "rosa",
        "root",
    ]


async def test_without_sharing_everyone_sees_a_playbook_and_only_admins_change_it(people):
    pid = new_id()
    await stored(people.admin, playbook(pid))
    assert (await people.viewer_out.get(f"/api/playbooks/{pid}/sharing")).json() == {
        "owner_team": None,
        "visibility": "everyone",
        "shared": False,
    }
    for someone in (people.viewer_in, people.responder_in, people.responder_out, people.viewer_out):
        assert await reads(someone, pid) == [200] * 6
    for responder in (people.responder_in, people.responder_out):
        refused = await responder.post("/api/playbooks", json=playbook(pid, "changed"))
        assert refused.status_code == 403 and "only admins may" in refused.json()["detail"]
        assert (await responder.post(f"/api/playbooks/{pid}/restore", json={"version": 1})).status_code == 403
        await share(responder, pid, "sre", "team", status=403)
    assert (await stored(people.admin, playbook(pid, "changed")))["version"] == 2


async def test_who_may_create_a_playbook(people):
    # A responder names one of their teams as owner (body or query); the team owns it at once.
    body_owned = await stored(people.responder_in, playbook(new_id()) | {"owner_team": "sre"})
    assert body_owned["sharing"] == {"owner_team": "sre", "visibility": "everyone"}
    query_owned = await stored(people.responder_in, playbook(new_id()), owner_team="sre")
    assert query_owned["sharing"]["owner_team"] == "sre"
    # Without an owner team, or with a team they are not in: 403; an unknown team: 422 naming the field.
    for owner, status, words in (
        (None, 403, "owner_team: name one of your teams"),
        ("dba", 403, "owner_team: you are not a member of dba"),
        ("nobody", 422, "owner_team: no team is named 'nobody'"),
    ):
        body = playbook(new_id()) | ({"owner_team": owner} if owner else {})
        refused = await people.responder_in.post("/api/playbooks", json=body)
        assert (refused.status_code, words in refused.json()["detail"]) == (status, True), refused.text
    forged = await people.viewer_in.post("/api/playbooks", json=playbook(new_id()) | {"owner_team": "sre"})
    assert forged.status_code == 403  # a viewer never creates, even for their own team
    # Admins may leave the owner out (no sharing: as before).
    assert (await stored(people.admin, playbook(new_id())))["sharing"] is None
    # An id taken by a playbook the caller cannot see: 409, not a new version of it.
    hidden = new_id()
    await stored(people.admin, playbook(hidden), owner_team="dba")
    await share(people.admin, hidden, "dba", "team")
    taken = await people.responder_in.post("/api/playbooks", json=playbook(hidden) | {"owner_team": "sre"})
    assert taken.status_code == 409 and "is taken" in taken.json()["detail"]
    # Naming another owner for an existing playbook is refused: its sharing changes that.
    moved = await people.responder_in.post("/api/playbooks", json=playbook(body_owned["id"]) | {"owner_team": "dba"})
    assert moved.status_code == 422 and "owner_team" in moved.json()["detail"]


async def test_sharing_changes_are_checked_and_audited(people):
    pid = new_id()
    await stored(people.responder_in, playbook(pid), owner_team="sre")
    bad = await people.responder_in.put(
        f"/api/playbooks/{pid}/sharing", json={"owner_team": None, "visibility": "team"}
    )
    assert bad.status_code == 422 and "owner_team" in bad.json()["detail"]
    odd = await people.responder_in.put(f"/api/playbooks/{pid}/sharing", json={"owner_team": "sre", "visibility": "x"})
    assert odd.status_code == 422
    away = await share(people.responder_in, pid, "dba", "team", status=403)
    assert "only admins may give" in away["detail"]
    await share(people.responder_in, pid, "sre", "team")
    await share(people.admin, pid, "dba", "team")  # an admin gives it to another team: rosa loses it
    assert await reads(people.responder_in, pid) == [404] * 6
    assert await reads(people.responder_out, pid) == [200] * 6
    rows = (await people.admin.get("/api/audit", params={"action": "playbook.sharing", "target_id": pid})).json()
    changes = [(r["actor"], r["before"], r["after"]) for r in reversed(rows["items"])]
    assert changes == [
        ("rosa", {"owner_team": "sre", "visibility": "everyone"}, {"owner_team": "sre", "visibility": "team"}),
        ("root", {"owner_team": "sre", "visibility": "team"}, {"owner_team": "dba", "visibility": "team"}),
    ]
    await share(people.admin, "nope-nope", None, "everyone", status=404)


async def test_a_fork_of_a_team_private_playbook_stays_private_to_the_team(people):
    pid, fork_id = new_id(), new_id()
    await stored(people.responder_in, playbook(pid), owner_team="sre")
    await share(people.responder_in, pid, "sre", "team")
    answer = await people.responder_in.post(f"/api/playbooks/{pid}/fork", json={"id": fork_id})
    assert answer.status_code == 201, answer.text
    assert answer.json()["sharing"] == {"owner_team": "sre", "visibility": "team"}
    assert await reads(people.responder_out, fork_id) == [404] * 6
    # A responder cannot fork into a team they are not in.
    refused = await people.responder_in.post(f"/api/playbooks/{pid}/fork", json={"id": new_id(), "owner_team": "dba"})
    assert refused.status_code == 403
    # A playbook everyone sees: an outsider forks it for their own team.
    public = new_id()
    await stored(people.admin, playbook(public))
    theirs = await people.responder_out.post(
        f"/api/playbooks/{public}/fork", json={"id": new_id(), "owner_team": "dba"}
    )
    assert theirs.status_code == 201 and theirs.json()["sharing"] == {"owner_team": "dba", "visibility": "everyone"}
    # ... but not with no owner team: only admins make playbooks nobody's team owns.
    orphan = await people.responder_out.post(f"/api/playbooks/{public}/fork", json={"id": new_id()})
    assert orphan.status_code == 403


async def test_the_list_filters_by_incident_type_team_owner_and_service(people):
    ids = {name: f"{name}-{uuid.uuid4().hex[:6]}" for name in ("db", "web", "slow", "default_pb")}
    await stored(people.responder_in, playbook(ids["db"], incident_type="db_down"), owner_team="sre")
    await stored(people.responder_out, playbook(ids["web"], incident_type="web_down"), owner_team="dba")
    await stored(people.admin, playbook(ids["slow"], incident_type="checkout_slow"))
    await stored(people.admin, playbook(ids["default_pb"], incident_type="other"))
    service = {
        "name": f"svc-{uuid.uuid4().hex[:6]}",
        "check": {"type": "tcp", "host": "10.0.0.9", "port": 5432},
        "incident_type": "db_down",
        "degraded_incident": {"incident_type": "checkout_slow"},
        "default_playbook": ids["default_pb"],
    }
    created = await people.admin.post("/api/services", json=service)
    assert created.status_code == 201, created.text

    async def listed(client=people.admin, **params: str) -> set[str]:
        answer = await client.get("/api/playbooks", params=params)
        assert answer.status_code == 200, answer.text
        return {p["id"] for p in answer.json()} & set(ids.values())

    assert await listed() == set(ids.values())
    assert await listed(incident_type="db_down") == {ids["db"]}
    assert await listed(team="sre") == {ids["db"]}
    assert await listed(team="dba") == {ids["web"]}
    assert await listed(owner="otto") == {ids["web"]}
    assert await listed(owner="root") == {ids["slow"], ids["default_pb"]}
    assert await listed(service=service["name"]) == {ids["db"], ids["slow"], ids["default_pb"]}
    assert await listed(service="no-such-service") == set()
    assert await listed(service=service["name"], team="sre") == {ids["db"]}
    unknown = await people.admin.get("/api/playbooks", params={"team": "nobody"})
    assert unknown.status_code == 422 and "team" in unknown.json()["detail"]
    # A team-private playbook drops out of an outsider's list, filters or not.
    await share(people.responder_in, ids["db"], "sre", "team")
    assert await listed(people.responder_out, incident_type="db_down") == set()
    assert await listed(people.responder_in, incident_type="db_down") == {ids["db"]}
    listed_item = next(p for p in (await people.admin.get("/api/playbooks")).json() if p["id"] == ids["db"])
    assert listed_item["sharing"] == {"owner_team": "sre", "visibility": "team"} and listed_item["version"] == 1


async def test_every_change_is_audited(people):
    pid, fork_id = new_id(), new_id()
    await stored(people.responder_in, playbook(pid) | {"message": "first"}, owner_team="sre")
    await stored(people.responder_in, playbook(pid, "second"))
    assert (await people.responder_in.post(f"/api/playbooks/{pid}/restore", json={"version": 1})).status_code == 201
    assert (await people.responder_in.post(f"/api/playbooks/{pid}/fork", json={"id": fork_id})).status_code == 201
    await share(people.responder_in, pid, "sre", "team")
    rows = (await people.admin.get("/api/audit", params={"target_type": "playbook", "actor": "rosa"})).json()["items"]
    mine = [(r["action"], r["target_id"]) for r in reversed(rows) if r["target_id"].startswith((pid, fork_id))]
    assert mine == [
        ("playbook.create", f"{pid}@1"),
        ("playbook.update", f"{pid}@2"),
        ("playbook.restore", f"{pid}@3"),
        ("playbook.fork", f"{fork_id}@1"),
        ("playbook.sharing", pid),
    ]
