"""Escalation on real parts: a run that waits for a person raises the severity, assigns the team and tells Slack,
level by level, until someone acknowledges the incident (issue 19, finding 5: nobody was told a fix failed)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlmodel import Session

from core.identity import Team
from tests.api.test_slack import slack  # noqa: F401 (the fixture)
from tests.factories import create_incident

pytestmark = pytest.mark.usefixtures("worker")


async def wait_for(check, what: str, timeout: float = 30):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} never happened")
        await asyncio.sleep(0.1)
    return found


async def escalations(api, incident_id: int) -> list[dict]:
    timeline = (await api.get(f"/api/incidents/{incident_id}/timeline")).json()["items"]
    return [e["data"] for e in timeline if e["kind"] == "incident.escalated"]


async def failing_type(api, escalation: list[dict]) -> str:
    incident_type = f"t-{uuid.uuid4().hex[:10]}"
    steps = [{"id": "fix", "agent": "noop", "params": {"ok": False, "summary": "still broken"},
              "fail_on_negative": True}]  # fmt: skip
    playbook = {"id": incident_type, "name": "fails", "incident_type": incident_type, "steps": steps}
    assert (await api.post("/api/playbooks", json=playbook)).status_code == 201
    template = {"default_severity": "P3", "playbook_id": incident_type, "escalation": escalation}
    saved = await api.put(f"/api/incident-templates/{incident_type}", json=template)
    assert saved.status_code == 200, saved.text
    assert saved.json()["escalation"][0]["after_seconds"] == escalation[0]["after_seconds"]
    return incident_type


async def test_a_failed_fix_escalates_until_someone_acknowledges(slack, settings, api, engine):  # noqa: F811
    _, calls = slack
    settings.retry_window_seconds = 120  # the run waits for a person long enough to escalate
    team = f"sre-{uuid.uuid4().hex[:6]}"
    with Session(engine) as session:
        session.add(Team(name=team))
        session.commit()
    incident_type = await failing_type(api, [
        {"after_seconds": 1, "severity": "P1", "team": team, "notify": ["slack"]},
        {"after_seconds": 6, "notify": ["slack"]},
    ])  # fmt: skip
    incident = await create_incident(api, incident_type=incident_type, severity="P3")

    [first] = await wait_for(lambda: escalations(api, incident["id"]), "the first level")
    assert (first["level"], first["previous_severity"], first["severity"], first["team"]) == (1, "P3", "P1", team)
    assert first["reason"] == "step fix failed; waiting for retry_step or abort"
    detail = (await api.get(f"/api/incidents/{incident['id']}")).json()
    assert detail["severity"] == "P1" and detail["assignee_team_id"] is not None

    async def told() -> list:
        return [p for p in calls.posted if f"Incident #{incident['id']}" in p.get("text", "")]

    [message] = await wait_for(told, "the Slack message")
    assert "escalation level 1" in message["text"] and "still broken" not in message["text"]
    assert f"/incidents/{incident['id']}" in message["text"]

    page = (await api.get(f"/incidents/{incident['id']}")).text
    assert "Escalated (level 1, nobody had acknowledged it): severity P3 → <strong>P1</strong>" in page
    acked = await api.post(f"/api/incidents/{incident['id']}/acknowledge")
    assert acked.status_code == 200
    await asyncio.sleep(8)  # past level 2's time: acknowledged, so it does nothing
    assert [e["level"] for e in await escalations(api, incident["id"])] == [1]
    assert len(await told()) == 1


async def test_escalation_policies_are_validated(api):
    incident_type = f"t-{uuid.uuid4().hex[:10]}"
    path = f"/api/incident-templates/{incident_type}"
    bad = [
        ([{"after_seconds": 60}], "a level must notify, raise the severity or assign a team"),
        ([{"after_seconds": 600, "severity": "P1"}, {"after_seconds": 60, "severity": "P1"}], "later than the one"),
        ([{"after_seconds": 0, "severity": "P1"}], "greater than 0"),
        ([{"after_seconds": 60, "notify": ["pager"]}], "escalation.0.notify.0"),
        ([{"after_seconds": 60, "severity": "P9"}], "escalation.0.severity"),
    ]
    for escalation, problem in bad:
        answer = await api.put(path, json={"escalation": escalation})
        assert answer.status_code == 422 and problem in answer.text, (escalation, answer.text)


async def test_the_escalation_message_has_an_acknowledge_button(slack, settings, api, engine, server):  # noqa: F811
    import httpx

    from tests.api.test_slack import click
    from tests.factories import make_user

    base, calls = slack
    settings.retry_window_seconds = 120
    bob, _ = make_user(engine, "responder", username=f"bob-{uuid.uuid4().hex[:6]}")
    assert (await api.patch(f"/api/users/{bob.id}", json={"slack_user_id": "U0BOB0001"})).status_code == 200
    viewer, _ = make_user(engine, "viewer", username=f"vic-{uuid.uuid4().hex[:6]}")
    assert (await api.patch(f"/api/users/{viewer.id}", json={"slack_user_id": "U0VIEWER1"})).status_code == 200
    incident_type = await failing_type(api, [{"after_seconds": 1, "notify": ["slack"]}])
    incident = await create_incident(api, incident_type=incident_type)

    async def posted() -> list:
        return [p for p in calls.posted if f"Incident #{incident['id']}" in p.get("text", "")]

    [message] = await wait_for(posted, "the escalation's Slack message")
    [button] = message["blocks"][-1]["elements"]
    assert (button["action_id"], button["value"]) == ("incident_acknowledge", str(incident["id"]))

    url = f"{server}/api/slack/interactions"
    async with httpx.AsyncClient(timeout=10) as slack_client:
        body, headers = click(base, incident["id"], "incident_acknowledge", {"id": "U0VIEWER1", "username": "vic"})
        assert (await slack_client.post(url, content=body, headers=headers)).status_code == 200
        await wait_for(lambda: _answered(calls, "acknowledging takes a responder"), "the viewer's refusal")
        assert (await api.get(f"/api/incidents/{incident['id']}")).json()["acknowledged_at"] is None
        body, headers = click(base, incident["id"], "incident_acknowledge", {"id": "U0BOB0001", "username": "bob"})
        assert (await slack_client.post(url, content=body, headers=headers)).status_code == 200
        await wait_for(lambda: _answered(calls, f"acknowledged by {bob.username}"), "the acknowledgement")
    detail = (await api.get(f"/api/incidents/{incident['id']}")).json()
    assert detail["acknowledged_at"] is not None


async def _answered(calls, text: str) -> bool:
    return any(text in r.get("text", "") for r in calls.responses)
