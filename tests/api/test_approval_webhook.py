"""Approval webhooks: the request is POSTed to a real local receiver, signed per Standard Webhooks (verified there
with the library); the tool answers through the API with its own token. A receiver that fails is retried."""

from __future__ import annotations

import asyncio
import base64
import time
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from core.settings import Settings
from tests.api.test_approvals import gated_incident, pending_approval
from tests.factories import wait_for_workflow
from tests.peers import serving

SECRET = "whsec_" + base64.b64encode(b"a-secret-of-32-bytes-for-tests!!").decode()


@pytest.fixture
def receiver(settings):
    """A webhook receiver on 127.0.0.1 that answers 500 to the first delivery, then verifies and keeps them."""
    deliveries: list[dict] = []
    refused: list[str] = []
    failures = [1]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                payload = Webhook(SECRET).verify(body, dict(self.headers.items()))
            except WebhookVerificationError as err:
                refused.append(str(err))
                self.send_response(401)
            else:
                if failures[0]:
                    failures[0] -= 1
                    self.send_response(500)
                else:
                    deliveries.append({"payload": payload, "id": self.headers["webhook-id"]})
                    self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as base:
        settings.approval_webhook_url = f"{base}/hooks/approvals"
        settings.approval_webhook_secret = SecretStr(SECRET)
        yield deliveries, refused


async def test_a_signed_request_reaches_the_tool_which_answers_through_the_api(
    receiver, worker, api, client_as, temporal_client
):
    deliveries, refused = receiver
    tool = await client_as("approver", "deploy-bot")  # the external tool's own API token
    incident = await gated_incident(api)
    approval = await pending_approval(api, incident["id"])
    deadline = time.monotonic() + 30
    while not deliveries and time.monotonic() < deadline:  # the first try got a 500: Temporal retried
        await asyncio.sleep(0.1)
    assert len(deliveries) == 1 and refused == []
    delivered = deliveries[0]
    assert delivered["id"] == f"approval-{approval['id']}-requested"
    assert delivered["payload"]["type"] == "approval.requested"
    data = delivered["payload"]["data"]
    assert (data["id"], data["step_id"], data["risk"]) == (approval["id"], "remediate", "high")
    assert data["params"] == approval["params"]

    answer = await tool.post(httpx.URL(data["decide_url"]).path, json={"decision": "approve", "comment": "canary ok"})
    assert answer.status_code == 200, answer.text
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert (state.steps[1].approval.decided_by, state.steps[1].approval.channel) == ("deploy-bot", "api")
    detail = (await api.get(f"/api/approvals/{approval['id']}")).json()
    assert ("notified", "webhook") in [(e["kind"], e["channel"]) for e in detail["events"]]


def test_a_webhook_secret_must_be_a_standard_webhooks_secret():
    with pytest.raises(ValueError, match="approval_webhook_secret"):
        Settings(_env_file=None, approval_webhook_secret="whsec_not base64!")  # type: ignore[call-arg]
    configured = Settings(_env_file=None, approval_webhook_url="https://hooks.example.com/a",  # type: ignore[call-arg]
                          approval_webhook_secret=SECRET)  # fmt: skip
    assert configured.approval_channels() == ["webhook"]
