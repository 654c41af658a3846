"""remediate_webhook against a real local receiver that verifies every request with the standardwebhooks library:
signatures, the stable webhook-id across retries, 4xx as final, redirects reported not followed, timeouts, the
SSRF guard; and through the real engine: approval first (default risk high), then exactly one verified delivery,
and a 503 that Temporal retries with the same webhook-id."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import Session, col, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps
from activities.remediate import RemediateWebhookAgent
from core.outbound import OutboundPolicy, guarded_async_client
from core.payloads import AgentInput, IncidentContext, WorkflowState
from core.settings import Settings
from core.tables import AgentRun, WorkflowStep
from tests.api.test_approvals import pending_approval
from tests.factories import wait_for_workflow
from tests.peers import serving
from tests.workflows.test_engine import run_playbook, step
from worker.runner import incident_worker

SECRET = "whsec_" + base64.b64encode(b"remediation-webhook-test-secret!").decode()
SPEC = RemediateWebhookAgent.spec
PAYLOAD = {"service": "checkout", "action": "rollback", "to_version": "v41"}


class Receiver:
    """What the deploy system received, and how it answers (a script of statuses first)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.status = 200
        self.body = b'{"deployment": "d-17", "state": "queued"}'
        self.content_type = "application/json"
        self.location: str | None = None
        self.delay = 0.0
        self.lock = threading.Lock()

    def verified(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["verified"]]


@contextmanager
def receiver() -> Iterator[tuple[str, Receiver]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def _receive(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                Webhook(SECRET).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
            with state.lock:
                state.requests.append(
                    {"method": self.command, "path": self.path, "headers": headers, "body": body, "verified": verified}
                )
                status = state.script.pop(0) if state.script else state.status
            time.sleep(state.delay)
            self.send_response(status)
            if state.location:
                self.send_header("Location", state.location)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        do_POST = do_PUT = _receive  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as base:
        yield f"{base}/deploy", state


@pytest.fixture
def peer() -> Iterator[tuple[str, Receiver]]:
    with receiver() as found:
        yield found


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # A shared client with a credential of its own: it must never reach the deploy system.
    async with httpx.AsyncClient(headers={"Authorization": "Bearer shared-client-token"}) as client:
        yield client


def webhook_agent(http: httpx.AsyncClient, secret: str = SECRET) -> RemediateWebhookAgent:
    settings = Settings(_env_file=None, remediation_webhook_secret=secret)  # type: ignore[call-arg]
    return RemediateWebhookAgent(AgentDeps(http=http, settings=settings))


def agent_input(params: dict[str, Any], **extra: Any) -> AgentInput:
    incident = IncidentContext(incident_id=7, title="checkout is failing", service="checkout", severity="P2")
    return AgentInput(incident=incident, workflow_id="incident-7", step_id="rollback", params=params, **extra)


async def test_a_signed_post_the_receiver_verifies(http, peer):
    url, state = peer
    params = {"url": url + "?token=abc123", "payload": PAYLOAD, "headers": {"X-Deploy-Env": "prod"}}
    result = await webhook_agent(http).run(agent_input(params))
    assert result.ok and result.summary.startswith(f"POST {url}: HTTP 200 in ")  # no query: it may hold tokens
    (request,) = state.requests
    assert request["verified"] and request["method"] == "POST" and request["path"] == "/deploy?token=abc123"
    assert json.loads(request["body"]) == PAYLOAD
    headers = request["headers"]
    assert headers["webhook-id"] == headers["idempotency-key"] == "incident-7:rollback:1"
    assert headers["content-type"] == "application/json" and headers["x-deploy-env"] == "prod"
    assert "authorization" not in headers and "cookie" not in headers
    data = result.data
    assert (data["status"], data["webhook_id"], data["method"], data["url"]) == (
        200, "incident-7:rollback:1", "POST", url
    )  # fmt: skip
    assert data["json"] == {"deployment": "d-17", "state": "queued"} and not data["body_truncated"]
    (message,) = result.messages
    assert message["role"] == "tool" and "webhook-id incident-7:rollback:1" in message["content"]


async def test_put_an_expected_status_and_an_explicit_authorization(http, peer):
    url, state = peer
    state.status, state.body, state.content_type = 202, b"accepted", "text/plain"
    params = {"url": url, "method": "PUT", "expect_status": 202, "headers": {"Authorization": "Bearer deploy-token"}}
    result = await webhook_agent(http).run(agent_input(params, run=2))
    assert result.ok and result.data["json"] is None and result.data["body"] == "accepted"
    (request,) = state.requests
    assert request["verified"] and request["method"] == "PUT" and json.loads(request["body"]) == {}
    assert request["headers"]["authorization"] == "Bearer deploy-token"  # given explicitly: sent
    assert request["headers"]["webhook-id"] == "incident-7:rollback:2"  # a new run of the step: a new id
    state.status = 200  # a 2xx, but not the one expected: a negative answer
    other = await webhook_agent(http).run(agent_input(params))
    assert not other.ok and other.summary == f"PUT {url}: HTTP 200, expected 202"


async def test_a_503_raises_for_a_retry_that_carries_the_same_webhook_id(http, peer):
    url, state = peer
    state.script = [503]
    state.body = b"deployer is restarting"
    agent, params = webhook_agent(http), {"url": url, "payload": PAYLOAD}
    with pytest.raises(ApplicationError) as unavailable:
        await agent.run(agent_input(params))
    assert not unavailable.value.non_retryable
    assert unavailable.value.message == f"POST {url} answered HTTP 503: deployer is restarting"
    assert (await agent.run(agent_input(params))).ok
    first, second = state.requests
    assert first["verified"] and second["verified"]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == "incident-7:rollback:1"
    assert first["headers"]["idempotency-key"] == second["headers"]["idempotency-key"]


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (404, False), (409, False), (429, True)])
async def test_a_4xx_is_final_except_the_ones_that_mean_later(http, peer, status, retryable):
    url, state = peer
    state.status, state.body = status, b'{"error": "no release v41 for checkout"}' + b" " * 5000
    with pytest.raises(ApplicationError) as refused:
        await webhook_agent(http).run(agent_input({"url": url, "payload": PAYLOAD}))
    assert refused.value.non_retryable is not retryable
    assert f"answered HTTP {status}" in refused.value.message
    assert '{"error": "no release v41 for checkout"}' in refused.value.message
    assert len(refused.value.message) < 500  # an excerpt of the body, not all of it


async def test_a_redirect_is_reported_not_followed(http, peer):
    url, state = peer
    state.status, state.location, state.body = 302, url.replace("/deploy", "/elsewhere"), b""
    result = await webhook_agent(http).run(agent_input({"url": url, "payload": PAYLOAD}))
    assert not result.ok and result.data["location"] == state.location
    assert result.summary == f"POST {url}: HTTP 302 redirect to {state.location}, not followed"
    assert [r["path"] for r in state.requests] == ["/deploy"]
    assert result.findings[0]["title"] == result.summary


async def test_a_large_body_is_cut_at_4_kb_and_not_parsed(http, peer):
    url, state = peer
    state.body = json.dumps({"log": "x" * 10_000}).encode()
    result = await webhook_agent(http).run(agent_input({"url": url}))
    assert result.ok and result.data["body_truncated"] and result.data["json"] is None
    assert len(result.data["body"]) == 4096


async def test_a_receiver_that_does_not_answer_in_time_raises_for_a_retry(http, peer):
    url, state = peer
    state.delay = 2
    started = time.monotonic()
    with pytest.raises(ApplicationError) as slow:
        await webhook_agent(http).run(agent_input({"url": url, "timeout_seconds": 0.5}))
    assert time.monotonic() - started < 1.5
    assert not slow.value.non_retryable and slow.value.message == f"POST {url} did not answer within 0.5 s"


async def test_nothing_is_sent_without_a_secret(http, peer):
    url, state = peer
    with pytest.raises(ApplicationError) as unsigned:
        await webhook_agent(http, secret="").run(agent_input({"url": url}))
    assert unsigned.value.non_retryable and "set REMEDIATION_WEBHOOK_SECRET" in unsigned.value.message
    assert state.requests == []


async def test_the_ssrf_guard_refuses_for_good_and_a_closed_port_is_retried(peer):
    url, state = peer
    async with guarded_async_client(OutboundPolicy()) as guarded:  # loopback not allowed
        with pytest.raises(ApplicationError) as blocked:
            await webhook_agent(guarded).run(agent_input({"url": url}))
    assert blocked.value.non_retryable and "is loopback: refused" in blocked.value.message
    assert state.requests == []
    async with httpx.AsyncClient() as plain:
        with pytest.raises(ApplicationError) as down:
            await webhook_agent(plain).run(agent_input({"url": "http://127.0.0.1:9/deploy"}))
    assert not down.value.non_retryable and down.value.message.startswith("POST http://127.0.0.1:9/deploy failed")


def test_params_are_checked_against_the_schema():
    assert SPEC.default_risk == "high" and SPEC.capabilities == ("remediation",)
    assert SPEC.params_problem({"url": "https://deploy.internal/hooks/rollback", "payload": PAYLOAD}) is None
    for params, field in (
        ({}, "params: 'url' is a required property"),
        ({"url": "ftp://deploy.internal/x"}, "params.url"),
        ({"url": "https://d", "method": "GET"}, "params.method"),
        ({"url": "https://d", "payload": [1, 2]}, "params.payload"),
        ({"url": "https://d", "headers": {"Webhook-Id": "mine"}}, "params.headers"),
        ({"url": "https://d", "headers": {"IDEMPOTENCY-KEY": "mine"}}, "params.headers"),
        ({"url": "https://d", "headers": {"X-Evil": "a\r\nHost: other"}}, "params.headers.X-Evil"),
        ({"url": "https://d", "timeout_seconds": 301}, "params.timeout_seconds"),
        ({"url": "https://d", "expect_status": 99}, "params.expect_status"),
    ):
        problem = SPEC.params_problem(params)
        assert problem is not None and problem.startswith(field), (params, problem)


async def test_bad_params_are_refused_when_the_playbook_is_stored(api):
    rollback = {"id": "rollback", "agent": "remediate_webhook", "params": {"url": "https://d", "method": "GET"}}
    body = {"id": "bad-webhook", "name": "bad", "incident_type": "bad-webhook", "steps": [rollback]}
    refused = await api.post("/api/playbooks", json=body)
    assert refused.status_code == 422
    assert "step rollback: params.method: 'GET' is not one of ['POST', 'PUT']" in refused.text


def step_rows(engine, workflow_id: str, step_id: str) -> tuple[list[AgentRun], WorkflowStep]:
    with Session(engine) as session:
        attempts = session.exec(
            select(AgentRun)
            .where(AgentRun.workflow_id == workflow_id, AgentRun.step_id == step_id)
            .order_by(col(AgentRun.attempt))
        ).all()
        stored = session.exec(
            select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id, WorkflowStep.step_id == step_id)
        ).one()
    return list(attempts), stored


async def test_in_a_playbook_it_waits_for_approval_then_delivers_once(api, temporal_client, engine, settings, peer):
    url, state = peer
    settings.remediation_webhook_secret = SecretStr(SECRET)
    incident = await run_playbook(api, [step("rollback", "remediate_webhook", params={"url": url, "payload": PAYLOAD})])
    workflow_id = incident["workflow_id"]
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        approval = await pending_approval(api, incident["id"])
        assert (approval["risk"], approval["agent"]) == ("high", "remediate_webhook")
        state_now = await temporal_client.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState)
        assert state_now.status == "waiting_approval" and state.requests == []
        decided = await api.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        outcome, final = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    (request,) = state.requests
    assert request["verified"] and json.loads(request["body"]) == PAYLOAD
    assert request["headers"]["webhook-id"] == f"{workflow_id}:rollback:1"
    assert "authorization" not in request["headers"]
    output = final.steps[0].output
    assert output["ok"] and output["data"]["status"] == 200 and output["data"]["json"]["deployment"] == "d-17"
    attempts, stored = step_rows(engine, workflow_id, "rollback")
    assert [a.status for a in attempts] == ["succeeded"] and stored.status == "completed"


async def test_in_a_playbook_a_503_is_retried_with_the_same_webhook_id(api, temporal_client, engine, settings, peer):
    url, state = peer
    state.script = [503]
    settings.remediation_webhook_secret = SecretStr(SECRET)
    rollback = step("rollback", "remediate_webhook", params={"url": url},
                    retry={"max_attempts": 3, "initial_interval_seconds": 0.1})  # fmt: skip
    # Risk high (the agent's, which a playbook cannot lower): an admin's policy pre-approves it instead.
    policy = {"name": "rollbacks", "agent": "remediate_webhook", "max_risk": "high", "auto_approve": True}
    assert (await api.post("/api/approval-policies", json=policy)).status_code == 201
    incident = await run_playbook(api, [rollback])
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, final = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed" and final.steps[0].approval.decided_by == "policy:rollbacks"
    first, second = state.requests
    assert first["verified"] and second["verified"]
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == f"{incident['workflow_id']}:rollback:1"
    attempts, stored = step_rows(engine, incident["workflow_id"], "rollback")
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed"), (2, "succeeded")]
    assert "answered HTTP 503" in (attempts[0].error or "")
    assert stored.status == "completed" and final.steps[0].attempt == 2
