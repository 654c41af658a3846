"""The activity that runs every webhook agent: POST the attempt's input and context to the agent's URL, signed
per Standard Webhooks with its secret, and read back an AgentResult (bounded, validated)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, select
from standardwebhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import agent_result
from activities.heartbeat import heartbeating
from activities.runs import AgentRunLog, unavailable
from core.payloads import WEBHOOK_AGENT_ACTIVITY, AgentInput, AgentResult
from core.redact import redact_text
from core.webhook_agents import WebhookAgent


class _Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"] = "tool"
    content: str = Field(max_length=100_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class WebhookAnswer(BaseModel):
    """What a webhook agent must answer (JSON): the AgentResult shape."""

    model_config = ConfigDict(extra="ignore")

    ok: bool
    summary: str = Field(max_length=2_000)
    data: dict[str, Any] = Field(default_factory=dict)
    findings: list[dict[str, Any]] = Field(default_factory=list, max_length=200)
    resolved: bool | None = None
    messages: list[_Message] = Field(default_factory=list, max_length=50)


def _refuse(message: str) -> ApplicationError:
    """Retrying the same request cannot help: the agent's registration or its answer must change."""
    return ApplicationError(message, type="WebhookAgentError", non_retryable=True)


class WebhookAgentActivities:
    def __init__(self, engine: Engine, http: httpx.AsyncClient, runs: AgentRunLog) -> None:
        self._engine = engine
        self._http = http
        self._runs = runs

    def _load(self, name: str) -> WebhookAgent | None:
        with Session(self._engine) as session:
            return session.exec(select(WebhookAgent).where(WebhookAgent.name == name)).first()

    @activity.defn(name=WEBHOOK_AGENT_ACTIVITY)
    async def webhook_agent(self, input: AgentInput) -> AgentResult:
        """Run the webhook agent the step names (input.agent)."""
        try:
            agent = await asyncio.to_thread(self._load, input.agent)
        except Exception as err:  # our database down: the run waits it out, as for any agent (activities/runs.py)
            down = unavailable(err, "")
            if down is None:
                raise
            raise down from None
        if agent is None or not agent.enabled:
            state = "disabled" if agent is not None else "not registered"
            raise _refuse(f"webhook agent {input.agent!r} is {state} (POST /api/agents/webhooks registers one)")
        problem = agent.spec().params_problem(input.params)
        if problem:
            raise _refuse(f"{agent.name}: {problem}")
        return await self._runs.around(agent.name, input, lambda: self._call(agent, input))

    async def _call(self, agent: WebhookAgent, input: AgentInput) -> AgentResult:
        info = activity.info()
        message_id = f"{input.workflow_id}.{input.step_id}.{input.run}.{info.attempt}"
        sent_at = datetime.now(UTC)
        body = json.dumps(
            {
                "type": "agent.run",
                "agent": agent.name,
                "workflow_id": input.workflow_id,
                "step_id": input.step_id,
                "run": input.run,
                "attempt": info.attempt,
                "incident": input.context["incident"] if input.context else None,
                "params": input.params,
                "instructions": input.instructions,
                "context": input.context,
            },
            default=str,
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(agent.secret).sign(message_id, sent_at, body),
            "user-agent": "agent-monitor",
        }

        async def exchange() -> tuple[httpx.Response, bytearray]:
            async with self._http.stream(
                "POST", agent.url, content=body, headers=headers, timeout=agent.timeout_seconds, follow_redirects=False
            ) as response:
                raw = bytearray()
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) > agent.max_response_bytes:
                        raise _refuse(f"{agent.name} answered more than {agent.max_response_bytes} bytes")
            return response, raw

        try:
            # Heartbeating while the agent works: a step's heartbeat timeout holds, and an abort cancels the call.
            response, raw = await heartbeating(exchange(), f"waiting for {agent.name}")
        except httpx.TimeoutException:
            raise RuntimeError(f"{agent.name} did not answer within {agent.timeout_seconds:g} s") from None
        except httpx.HTTPError as err:  # down, refused, blocked by the SSRF guard: Temporal retries
            raise RuntimeError(f"cannot reach {agent.name}: {err}") from None
        excerpt = redact_text(bytes(raw).decode(errors="replace"), 300)  # the error is kept in history and shown
        if response.status_code >= 500:
            raise RuntimeError(f"{agent.name} answered HTTP {response.status_code}: {excerpt}")
        if not response.is_success:
            raise _refuse(f"{agent.name} answered HTTP {response.status_code}: {excerpt}")
        try:
            answer = WebhookAnswer.model_validate_json(bytes(raw))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise _refuse(f"{agent.name} answered a result that does not fit: {where}: {first['msg']}") from None
        return agent_result(
            answer.ok,
            answer.summary,
            data={**answer.data, "attempt": info.attempt},
            findings=answer.findings,
            resolved=answer.resolved,
            messages=[m.model_dump() for m in answer.messages],
        )

    def all(self) -> list[Any]:
        return [self.webhook_agent]
