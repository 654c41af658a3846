"""Webhook agents, registered by URL and run by the real engine against a real local receiver that verifies our
Standard Webhooks signature with the library: context in, AgentResult out, retries, and clear refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from sqlmodel import Session, col, select
from standardwebhooks import Webhook

from core.conversations import ConversationMessage
from core.tables import AgentRun
from tests.factories import wait_for_workflow
from tests.peers import serving
from tests.secret_shapes import shown
from tests.workflows.test_engine import run_playbook, step
from worker.runner import incident_worker


@dataclass
class Receiver:
    secret: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)  # verified bodies
    ids: list[str] = field(default_factory=list)  # webhook-id of every delivery
    fail_first: int = 0
    answer: bytes = b""
    status: int = 200


@contextmanager
def receiver() -> Iterator[tuple[str, Receiver]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.ids.append(self.headers["webhook-id"])
            try:
                payload = Webhook(state.secret).verify(body, dict(self.headers.items()))
            except Exception:
                return self._send(401, b'{"error": "bad signature"}')
            if state.fail_first:
                state.fail_first -= 1
                return self._send(503, b"busy")
            state.received.append(payload)
            answer = (
                state.answer
                or json.dumps(
                    {
                        "ok": False,
                        "summary": f"disk 97% full on {payload['incident']['service']}",
                        "findings": [{"title": "disk full", "detail": "/var at 97%", "severity": "high"}],
                        "resolved": False,
                        "data": {"usage_percent": 97},
                        "messages": [{"role": "tool", "content": "df: /var 97% used"}],
                    }
                ).encode()
            )
            self._send(state.status, answer)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as base:
        yield f"{base}/agent", state


def registration(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "disk_probe",
        "url": url,
        "description": "Looks at disk usage on the host",
        "capabilities": ["investigation"],
        "params_schema": {"type": "object", "properties": {"mount": {"type": "string"}}, "required": ["mount"]},
        **extra,
    }


async def test_a_webhook_agent_receives_the_signed_context_and_its_result_runs_the_step(
    api, temporal_client, engine, settings
):
    with receiver() as (url, state):
        created = await api.post("/api/agents/webhooks", json=registration(url))
        assert created.status_code == 201, created.text
        state.secret = created.json()["secret"]
        state.fail_first = 1  # the first delivery fails: Temporal retries it
        listed = (await api.get("/api/agents/webhooks")).json()
        assert [a["name"] for a in listed] == ["disk_probe"] and "secret" not in listed[0]
        assert (await api.get("/api/agents/disk_probe")).json()["source"] == "webhook"

        bad = await api.post(
            "/api/playbooks", json={"id": "p-bad", "name": "x", "steps": [step("probe", "disk_probe")]}
        )
        assert bad.status_code == 422 and "step probe: params: 'mount' is a required property" in bad.text

        incident = await run_playbook(
            api,
            [
                step("first", "noop", params={"summary": "the service is slow"}),
                step("probe", "disk_probe", "first", params={"mount": "/var"}, retry={"initial_interval_seconds": 0.1}),
            ],
        )
        async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
            outcome, state_ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    probe = next(s for s in state_.steps if s.step_id == "probe")
    assert probe.output is not None and probe.output["summary"] == "disk 97% full on checkout"
    assert probe.output["findings"][0]["title"] == "disk full" and probe.output["resolved"] is False
    assert probe.attempt == 2 and len(state.ids) == 2 and state.ids[0] != state.ids[1]  # one id per attempt

    (payload,) = state.received
    assert payload["agent"] == "disk_probe" and payload["params"] == {"mount": "/var"}
    assert payload["context"]["previous_outputs"]["first"]["summary"] == "the service is slow"
    assert [m["content"] for m in payload["context"]["conversation"]["messages"]] == [
        "the service is slow",
        "disk_probe attempt failed: RuntimeError: disk_probe answered HTTP 503: busy",  # the retry sees why
    ]
    with Session(engine) as session:
        said = session.exec(
            select(ConversationMessage.content)
            .where(ConversationMessage.step_id == "probe")
            .order_by(col(ConversationMessage.id))
        ).all()
    assert said == [
        "disk_probe attempt failed: RuntimeError: disk_probe answered HTTP 503: busy",
        "df: /var 97% used",
        "disk 97% full on checkout",
    ]


async def test_a_webhook_agent_answering_nonsense_fails_its_step_with_the_reason(
    api, temporal_client, engine, settings
):
    with receiver() as (url, state):
        created = await api.post("/api/agents/webhooks", json=registration(url, name="broken_probe"))
        state.secret = created.json()["secret"]
        state.answer = b'{"summary": 42}'
        incident = await run_playbook(api, [step("probe", "broken_probe", params={"mount": "/"})])
        async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
            outcome, final = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "failed"
    (probe,) = final.steps
    assert probe.status == "failed" and probe.error is not None
    assert "broken_probe answered a result that does not fit: ok: Field required" in probe.error
    assert len(state.received) == 1  # not retried: the same answer would come back


async def test_a_webhook_agents_error_answer_is_redacted_before_it_is_quoted(
    api, temporal_client, engine, settings, tmp_path
):
    """The step's error quotes the first 300 characters of a refusal: a secret in it, whole or cut there, is not
    shown in the step, its run or Temporal's history."""
    token = "ghp_0123456789abcdefABCDEFGHIJklmnopqrst"
    with receiver() as (url, state):
        created = await api.post("/api/agents/webhooks", json=registration(url, name="leaky_probe"))
        state.secret = created.json()["secret"]
        state.status, state.answer = 403, f'{{"error": "token {token} lacks scope", "pad": "{"x" * 300}"}}'.encode()
        incident = await run_playbook(api, [step("probe", "leaky_probe", params={"mount": "/"})])
        async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
            outcome, final = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "failed"
    (probe,) = final.steps
    assert probe.error is not None and 'leaky_probe answered HTTP 403: {"error": "token [REDACTED] lacks' in probe.error
    history = await temporal_client.get_workflow_handle(incident["workflow_id"]).fetch_history()
    kept = b"".join(e.SerializeToString() for e in history.events).decode(errors="replace")
    with Session(engine) as session:
        (run,) = session.exec(select(AgentRun).where(AgentRun.workflow_id == incident["workflow_id"])).all()
    for text in (probe.error, kept, run.error or ""):
        assert not shown(token[4:], text, str(tmp_path))


async def test_registration_is_checked(api, client_as):
    assert (await api.post("/api/agents/webhooks", json=registration("ftp://x/agent"))).status_code == 422
    metadata = await api.post("/api/agents/webhooks", json=registration("http://169.254.169.254/latest"))
    assert metadata.status_code == 422 and "169.254.169.254" in metadata.text
    builtin = await api.post("/api/agents/webhooks", json=registration("http://127.0.0.1:9/x", name="noop"))
    assert builtin.status_code == 409
    schema = await api.post(
        "/api/agents/webhooks", json=registration("http://127.0.0.1:9/x", params_schema={"type": "nonsense"})
    )
    assert schema.status_code == 422 and "params_schema is not a valid JSON schema" in schema.text
    remote = await api.post(
        "/api/agents/webhooks", json=registration("http://127.0.0.1:9/x", params_schema={"$ref": "https://x/s.json"})
    )
    assert remote.status_code == 422 and "may only refer within itself" in remote.text
    viewer = await client_as("viewer")
    assert (await viewer.post("/api/agents/webhooks", json=registration("http://127.0.0.1:9/x"))).status_code == 403
    first = await api.post("/api/agents/webhooks", json=registration("http://127.0.0.1:9/x", name="twice"))
    assert first.status_code == 201
    again = await api.post("/api/agents/webhooks", json=registration("http://127.0.0.1:9/x", name="twice"))
    assert again.status_code == 409
    assert (await api.delete("/api/agents/webhooks/twice")).status_code == 204
    assert (await api.delete("/api/agents/webhooks/twice")).status_code == 404
