"""Every mutation leaves an audit row with actor and origin; admins browse and export them."""

from __future__ import annotations

import csv
import io
import json

from tests.api.test_access import csrf_of, login
from tests.conftest import app_client
from tests.factories import PASSWORD, incident_payload, make_user


async def test_each_mutation_is_audited_with_actor_ip_and_change(app, api, engine):
    incident = (await api.post("/api/incidents", json=incident_payload(title="db down"))).json()
    user = (
        await api.post(
            "/api/users",
            json={"username": "newbie", "role": "viewer"},
            headers={"User-Agent": "ops-script/1.0"},
        )
    ).json()
    await api.patch(f"/api/users/{user['id']}", json={"role": "responder"})
    team = (await api.post("/api/teams", json={"name": "dba"})).json()
    await api.put(f"/api/teams/{team['id']}/members/{user['id']}")
    await api.put(f"/api/teams/{team['id']}/members/{user['id']}")  # repeat: no second row
    await api.put(f"/api/incidents/{incident['id']}/assignee", json={"team_id": team["id"]})
    await api.delete(f"/api/teams/{team['id']}/members/{user['id']}")
    token = (await api.post("/api/me/tokens", json={"name": "ci"})).json()
    await api.delete(f"/api/tokens/{token['id']}")
    make_user(engine, "viewer", username="sam")
    async with app_client(app) as browser:
        await login(browser, "sam", password="wrong password")
        await login(browser, "sam")
        home = await browser.get("/")
        await browser.post(
            "/api/me/password",
            json={"current_password": PASSWORD, "new_password": "another long secret"},
            headers={"X-CSRF-Token": csrf_of(home.text)},
        )

    events = (await api.get("/api/audit", params={"limit": 500})).json()["items"]
    by_action = {}
    for event in events:
        by_action.setdefault(event["action"], []).append(event)
    expected = {
        "incident.create": ("root", "incident", str(incident["id"])),
        "incident.assign": ("root", "incident", str(incident["id"])),
        "user.create": ("root", "user", str(user["id"])),
        "user.update": ("root", "user", str(user["id"])),
        "team.create": ("root", "team", str(team["id"])),
        "team.member_add": ("root", "team", str(team["id"])),
        "team.member_remove": ("root", "team", str(team["id"])),
        "token.create": ("root", "api_token", str(token["id"])),
        "token.revoke": ("root", "api_token", str(token["id"])),
        "session.login_failed": ("sam", "user", None),
        "session.login": ("sam", "user", None),
        "user.password_change": ("sam", "user", None),
    }
    for action, (actor, target_type, target_id) in expected.items():
        assert action in by_action, action
        event = next((e for e in by_action[action] if e["actor"] == actor), None)
        assert event is not None, (action, by_action[action])
        assert event["target_type"] == target_type, action
        if target_id:
            assert event["target_id"] == target_id, action
        assert event["ip"] == "127.0.0.1", action
    assert len(by_action["team.member_add"]) == 1
    created = next(e for e in by_action["user.create"] if e["actor"] == "root")
    assert created["user_agent"] == "ops-script/1.0"
    assert created["after"]["username"] == "newbie" and "password_hash" not in json.dumps(created)
    update = by_action["user.update"][0]
    assert update["before"]["role"] == "viewer" and update["after"]["role"] == "responder"
    assign = by_action["incident.assign"][0]
    assert assign["before"] == {"assignee_user_id": None, "assignee_team_id": None}
    assert assign["after"] == {"assignee_user_id": None, "assignee_team_id": team["id"]}
    assert by_action["incident.create"][0]["after"]["title"] == "db down"
    assert by_action["session.login"][0]["actor_kind"] == "session"
    assert next(e for e in by_action["token.create"] if e["actor"] == "root")["actor_kind"] == "token"


async def test_audit_browse_filters_pages_and_exports(api):
    for name in ("a", "b", "c"):
        await api.post("/api/teams", json={"name": f"team-{name}"})
    first = (await api.get("/api/audit", params={"action": "team.create", "limit": 2})).json()
    assert [e["after"]["name"] for e in first["items"]] == ["team-c", "team-b"]
    rest = (await api.get("/api/audit", params={"action": "team.create", "before_id": first["next_before_id"]})).json()
    assert [e["after"]["name"] for e in rest["items"]] == ["team-a"] and rest["next_before_id"] is None

    jsonl = await api.get("/api/audit/export", params={"action": "team.create"})
    assert jsonl.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line)["after"]["name"] for line in jsonl.text.splitlines()] == [
        "team-c",
        "team-b",
        "team-a",
    ]
    as_csv = await api.get("/api/audit/export", params={"action": "team.create", "format": "csv"})
    assert 'filename="audit.csv"' in as_csv.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [json.loads(r["after"])["name"] for r in rows] == ["team-c", "team-b", "team-a"]
    assert (await api.get("/api/audit", params={"since": "not a date"})).status_code == 422

    page = await api.get("/admin/audit", params={"action": "team.create"})
    assert page.status_code == 200 and "team-b" in page.text and "team.create" in page.text
