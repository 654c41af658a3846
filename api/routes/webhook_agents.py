"""Register, list and remove webhook agents (agents that run elsewhere, called by URL), and the agents a playbook
may name in this installation: built-in, plugins and webhook agents."""

from __future__ import annotations

import base64
import secrets
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from activities.registry import agent_specs
from api.auth import Admin, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.agents import AGENT_NAME, Capability, Risk, schema_problem
from core.audit import record_audit
from core.outbound import BlockedTarget, OutboundPolicy, check_url
from core.webhook_agents import RESPONSE_MAX_BYTES, WebhookAgent

router = APIRouter(prefix="/api/agents/webhooks", tags=["agents"], dependencies=[require("viewer")])


class WebhookAgentCreate(BaseModel):
    name: str = Field(pattern=AGENT_NAME)
    url: str = Field(max_length=2048)
    version: str = Field(default="1.0.0", min_length=1, max_length=50)
    description: str = Field(default="", max_length=2000)
    capabilities: list[Capability] = Field(min_length=1, max_length=5)
    params_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    default_risk: Risk = "low"
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_response_bytes: int = Field(default=RESPONSE_MAX_BYTES, ge=1024, le=10 * RESPONSE_MAX_BYTES)

    @field_validator("params_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = schema_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class WebhookAgentPublic(BaseModel):
    name: str
    url: str
    version: str
    description: str
    capabilities: list[str]
    params_schema: dict[str, Any]
    default_risk: str
    timeout_seconds: float
    max_response_bytes: int
    enabled: bool
    created_by: str
    source: Literal["webhook"] = "webhook"


class WebhookAgentCreated(WebhookAgentPublic):
    secret: str = Field(description="Standard Webhooks secret to verify our requests with; shown only now")


@router.get("", response_model=list[WebhookAgentPublic])
def list_webhook_agents(session: SessionDep) -> list[WebhookAgent]:
    return list(session.exec(select(WebhookAgent).order_by(col(WebhookAgent.name))))


@router.post("", response_model=WebhookAgentCreated, status_code=status.HTTP_201_CREATED)
def register_webhook_agent(
    request: Request, body: WebhookAgentCreate, principal: Admin, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Register an agent by URL: we POST each attempt's context to it, signed with the secret answered here."""
    try:
        check_url(body.url, OutboundPolicy.from_settings(settings))
    except BlockedTarget as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"url: {err}") from None
    except ValueError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"url: {err}") from None
    if body.name in agent_specs():
        raise HTTPException(status.HTTP_409_CONFLICT, f"{body.name!r} is already an agent of this installation")
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    row = WebhookAgent(**body.model_dump(), secret=secret, created_by=principal.username)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"a webhook agent named {body.name!r} exists") from None
    record_audit(
        session,
        actor=actor_of(request, principal),
        action="agent.webhook.create",
        target_type="agent",
        target_id=body.name,
        after=body.model_dump(mode="json"),
    )
    session.commit()
    session.refresh(row)
    return {**row.model_dump(exclude={"secret"}), "secret": secret}


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_webhook_agent(request: Request, name: str, principal: Admin, session: SessionDep) -> None:
    """Remove a webhook agent; steps that name it fail (not retried) until it is registered again."""
    row = session.exec(select(WebhookAgent).where(WebhookAgent.name == name)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook agent named {name!r}")
    session.delete(row)
    record_audit(
        session, actor=actor_of(request, principal), action="agent.webhook.delete", target_type="agent", target_id=name
    )
    session.commit()
