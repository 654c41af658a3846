"""Acknowledging from an escalation email (issue 19, escalation: "acknowledged_at only by a person — UI, API, Slack
button, email link"). A real SMTP server (aiosmtpd) receives each person's mail; its link shows a confirmation page
(GET changes nothing), POST acknowledges once as that person, and the escalation's next level does not fire."""

from __future__ import annotations

import asyncio
import re
import uuid
from email.message import Message

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType

from core.activity_defs import ESCALATE_INCIDENT
from core.audit import AuditEvent
from tests.api.test_approval_email import inbox, mail_for  # noqa: F401 (inbox: the fixture)
from tests.api.test_escalation import escalations, failing_type, wait_for
from tests.factories import create_incident, make_user

pytestmark = pytest.mark.usefixtures("worker")


def ack_path(message: Message, incident_id: int) -> str:
    text = message.get_payload(decode=True).decode().replace("\r\n", "\n")  # type: ignore[union-attr]
    [url] = re.findall(rf"^Acknowledge incident #{incident_id}: (\S+)$", text, re.M)
    return httpx.URL(url).path


async def person(api, engine, role: str, name: str) -> tuple[object, str]:
    """A user of the role with an address: (user, address)."""
    user, _ = make_user(engine, role, username=f"{name}-{uuid.uuid4().hex[:6]}")
    address = f"{user.username}@example.com"
    assert (await api.patch(f"/api/users/{user.id}", json={"email": address})).status_code == 200
    return user, address


async def escalated_by_email(api, settings, levels: list[float]) -> dict:
    """An incident whose fix failed, escalating by email at each of these seconds."""
    settings.retry_window_seconds = 120  # the run waits for a person long enough to escalate
    incident_type = await failing_type(api, [{"after_seconds": s, "notify": ["email"]} for s in levels])
    return await create_incident(api, incident_type=incident_type, severity="P3")


async def incident_of(api, incident_id: int) -> dict:
    return (await api.get(f"/api/incidents/{incident_id}")).json()


async def test_an_emailed_link_acknowledges_and_stops_the_escalation(
    inbox,  # noqa: F811
    settings,
    api,
    engine,
    server,
    temporal_client,
):
    alice, alice_address = await person(api, engine, "responder", "alice")
    bob, bob_address = await person(api, engine, "approver", "bob")
    _, viewer_address = await person(api, engine, "viewer", "vic")
    incident = await escalated_by_email(api, settings, [1, 12])
    message = await mail_for(inbox, alice_address)
    assert message["Subject"] == f"Escalated: #{incident['id']} {incident['title']}"
    alice_path = ack_path(message, incident["id"])
    bob_path = ack_path(await mail_for(inbox, bob_address), incident["id"])
    assert alice_path != bob_path and alice_path.startswith("/incidents/email/")
    assert len(alice_path.rsplit("/", 1)[1]) >= 43  # 256 random bits, base64url
    assert sorted(m["To"] for m in inbox.messages) == sorted([alice_address, bob_address])  # not the viewer's
    assert viewer_address not in {m["To"] for m in inbox.messages}

    async with httpx.AsyncClient(base_url=server, timeout=30) as browser:  # no login: the link is the key
        confirm = await browser.get(alice_path)
        assert confirm.status_code == 200
        assert f"Acknowledge incident #{incident['id']}?" in confirm.text and alice.username in confirm.text
        assert (await incident_of(api, incident["id"]))["acknowledged_at"] is None  # GET changed nothing

        tampered = alice_path[:-4] + ("AAAA" if not alice_path.endswith("AAAA") else "BBBB")
        assert (await browser.get(tampered)).status_code == 401
        refused = await browser.post(tampered)
        assert refused.status_code == 401 and "This link is not valid" in refused.text
        assert (await browser.get("/incidents/email/not-a-token")).status_code == 401

        done = await browser.post(alice_path)
        assert done.status_code == 200 and f"Incident #{incident['id']} acknowledged" in done.text
        again = await browser.post(alice_path)
        assert again.status_code == 410 and "This link no longer works" in again.text
        assert (await browser.get(alice_path)).status_code == 410

        other = await browser.get(bob_path)  # someone has it already: said plainly, not an error
        assert other.status_code == 200 and "Already acknowledged" in other.text
        assert f"acknowledged by {alice.username}" in other.text
        assert (await browser.post(bob_path)).status_code == 200

    detail = await incident_of(api, incident["id"])
    assert detail["acknowledged_at"] is not None
    timeline = (await api.get(f"/api/incidents/{incident['id']}/timeline")).json()["items"]
    acks = [e["data"]["actor"] for e in timeline if e["kind"] == "incident.acknowledged"]
    assert acks == [alice.username]
    with Session(engine) as session:
        audit = session.exec(select(AuditEvent).where(AuditEvent.action == "incident.acknowledge")).all()
    assert [(a.actor_user_id, a.actor, a.actor_kind, a.target_id) for a in audit] == [
        (alice.id, alice.username, "email", str(incident["id"]))
    ]
    assert audit[0].ip == "127.0.0.1"

    # Level 2's timer fires (its activity runs, finds the incident acknowledged) and does nothing.
    handle = temporal_client.get_workflow_handle(incident["workflow_id"])

    async def level_two_ran() -> bool:
        history = await handle.fetch_history()
        scheduled = {
            e.event_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == ESCALATE_INCIDENT
        }
        completed = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
        ]
        return len(completed) == 2

    await wait_for(level_two_ran, "level 2's escalate_incident", timeout=60)
    assert [e["level"] for e in await escalations(api, incident["id"])] == [1]
    assert len(inbox.messages) == 2
    assert (await incident_of(api, incident["id"]))["severity"] == "P3"


async def test_a_link_refuses_who_may_no_longer_acknowledge_and_says_when_it_is_over(
    inbox,  # noqa: F811
    settings,
    api,
    engine,
    server,
):
    demoted, demoted_address = await person(api, engine, "responder", "dora")
    gone, gone_address = await person(api, engine, "responder", "gus")
    _, rita_address = await person(api, engine, "responder", "rita")
    incident = await escalated_by_email(api, settings, [1])
    paths = {
        a: ack_path(await mail_for(inbox, a), incident["id"]) for a in (demoted_address, gone_address, rita_address)
    }
    assert (await api.patch(f"/api/users/{demoted.id}", json={"role": "viewer"})).status_code == 200
    assert (await api.patch(f"/api/users/{gone.id}", json={"is_active": False})).status_code == 200

    async with httpx.AsyncClient(base_url=server, timeout=30) as browser:
        for method in ("GET", "POST"):
            viewer = await browser.request(method, paths[demoted_address])
            assert viewer.status_code == 403 and "acknowledging takes a responder" in viewer.text, viewer.text
            inactive = await browser.request(method, paths[gone_address])
            assert inactive.status_code == 403 and "is deactivated" in inactive.text
        assert (await incident_of(api, incident["id"]))["acknowledged_at"] is None

        resolved = await api.post(f"/api/incidents/{incident['id']}/status", json={"status": "resolved"})
        assert resolved.status_code == 200, resolved.text
        for method in ("GET", "POST"):
            over = await browser.request(method, paths[rita_address])
            assert over.status_code == 200 and f"Incident #{incident['id']} is resolved" in over.text
            assert "nothing to acknowledge" in over.text
    assert (await incident_of(api, incident["id"]))["acknowledged_at"] is None


async def test_an_expired_link_is_refused(inbox, settings, api, engine, server):  # noqa: F811
    settings.ack_link_ttl_seconds = 1  # ACK_LINK_TTL_SECONDS
    _, address = await person(api, engine, "responder", "erin")
    incident = await escalated_by_email(api, settings, [1])
    path = ack_path(await mail_for(inbox, address), incident["id"])
    await asyncio.sleep(1.5)
    async with httpx.AsyncClient(base_url=server, timeout=30) as browser:
        for method in ("GET", "POST"):
            answer = await browser.request(method, path)
            assert answer.status_code == 410 and "has expired" in answer.text
    assert (await incident_of(api, incident["id"]))["acknowledged_at"] is None


async def test_links_posted_at_once_acknowledge_once(inbox, settings, api, engine, server):  # noqa: F811
    _, alice_address = await person(api, engine, "responder", "alice")
    _, bob_address = await person(api, engine, "responder", "bob")
    incident = await escalated_by_email(api, settings, [1])
    alice_path = ack_path(await mail_for(inbox, alice_address), incident["id"])
    bob_path = ack_path(await mail_for(inbox, bob_address), incident["id"])
    async with httpx.AsyncClient(base_url=server, timeout=30) as browser:
        answers = await asyncio.gather(*(browser.post(p) for p in (alice_path, alice_path, bob_path, bob_path)))
    done = [a for a in answers if a.status_code == 200 and f"Incident #{incident['id']} acknowledged" in a.text]
    assert len(done) == 1, [(a.status_code, a.text[-300:]) for a in answers]
    assert all(a.status_code in (200, 410) for a in answers)
    timeline = (await api.get(f"/api/incidents/{incident['id']}/timeline")).json()["items"]
    assert len([e for e in timeline if e["kind"] == "incident.acknowledged"]) == 1
    with Session(engine) as session:
        audit = session.exec(select(AuditEvent).where(AuditEvent.action == "incident.acknowledge")).all()
    assert len(audit) == 1 and audit[0].actor_kind == "email"
