"""Approval emails: a real SMTP server (aiosmtpd) receives the request; its link shows a confirmation page
(GET decides nothing), POST decides once; a used or expired link is 410, an altered one 401."""

from __future__ import annotations

import asyncio
import re
import time
from email import message_from_bytes
from email.message import Message

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.api.test_approvals import decision_audit, gated_incident, pending_approval
from tests.factories import make_user, wait_for_workflow
from tests.peers import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def inbox(settings):
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.smtp_host, settings.smtp_port, settings.smtp_from = "127.0.0.1", controller.port, "am@example.com"
    yield box
    controller.stop()


async def mail_for(inbox: Inbox, to: str, timeout: float = 20) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in inbox.messages:
            if message["To"] == to:
                return message
        await asyncio.sleep(0.1)
    raise AssertionError(f"no mail to {to}")


def links(message: Message) -> dict[str, str]:
    text = message.get_payload(decode=True).decode().replace("\r\n", "\n")  # type: ignore[union-attr]
    return {kind.lower(): url for kind, url in re.findall(r"^(Approve|Reject): +(\S+)$", text, re.M)}


async def test_an_emailed_link_confirms_then_decides_once(inbox, worker, server, api, engine, temporal_client):
    alice, _ = make_user(engine, "approver", username="alice")
    await api.patch(f"/api/users/{alice.id}", json={"email": "alice@example.com"})
    make_user(engine, "responder", username="rita")  # may not decide: gets no mail
    incident = await gated_incident(api)
    approval = await pending_approval(api, incident["id"])
    message = await mail_for(inbox, "alice@example.com")
    assert message["Subject"].startswith("Approval needed: remediate on #")
    urls = links(message)
    assert set(urls) == {"approve", "reject"}
    path = {kind: httpx.URL(url).path for kind, url in urls.items()}
    token = path["approve"].rsplit("/", 1)[1]
    assert len(token) >= 43  # 256 random bits, base64url

    async with httpx.AsyncClient(base_url=server, timeout=30) as browser:  # no login: the link is the key
        confirm = await browser.get(path["approve"])
        assert confirm.status_code == 200 and "Approve <code>remediate</code>?" in confirm.text
        assert (await api.get(f"/api/approvals/{approval['id']}")).json()["status"] == "pending"  # GET decided nothing
        tampered = path["approve"][:-4] + ("AAAA" if not path["approve"].endswith("AAAA") else "BBBB")
        assert (await browser.get(tampered)).status_code == 401
        assert (await browser.post(tampered, data={"comment": "x"})).status_code == 401
        done = await browser.post(path["approve"], data={"comment": "from my phone"})
        assert done.status_code == 200 and "is approved" in done.text
        assert (await browser.post(path["approve"], data={})).status_code == 410  # used
        assert (await browser.get(path["reject"])).status_code == 410  # the request is decided
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    approved = state.steps[1].approval
    assert (approved.decided_by, approved.channel, approved.comment) == ("alice", "email", "from my phone")
    assert [m["To"] for m in inbox.messages] == ["alice@example.com"]
    detail = (await api.get(f"/api/approvals/{approval['id']}")).json()
    kinds = [(e["kind"], e["channel"]) for e in detail["events"]]
    assert ("notified", "email") in kinds and ("viewed", "email") in kinds and ("decided", "email") in kinds
    assert await decision_audit(api, approval["id"]) == [("approval.approved", "alice", "email", "email")]


async def test_a_link_stops_working_when_its_request_expires(inbox, worker, server, api, engine, temporal_client):
    bob, _ = make_user(engine, "approver", username="bob")
    await api.patch(f"/api/users/{bob.id}", json={"email": "bob@example.com"})
    incident = await gated_incident(api, approval_timeout_seconds=2)
    path = httpx.URL(links(await mail_for(inbox, "bob@example.com"))["approve"]).path
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert state.steps[1].approval.status == "expired"
    async with httpx.AsyncClient(base_url=server, timeout=30) as browser:
        assert (await browser.get(path)).status_code == 410
        assert (await browser.post(path, data={})).status_code == 410
