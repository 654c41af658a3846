"""Webhook agents: agents that run elsewhere, registered by URL. We POST each attempt's input and context as JSON,
signed per Standard Webhooks with the agent's own secret, and accept the AgentResult shape back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from core.agents import AgentSpec
from core.tables import utcnow

RESPONSE_MAX_BYTES = 1_048_576


class WebhookAgent(SQLModel, table=True):
    __tablename__ = "webhook_agents"
    __table_args__ = (UniqueConstraint("name", name="uq_webhook_agents_name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(63), nullable=False))
    url: str = Field(sa_column=Column(String(2048), nullable=False))
    # The Standard Webhooks secret (whsec_…) we sign with; shown once, when the agent is registered.
    secret: str = Field(sa_column=Column(String(200), nullable=False))
    version: str = Field(default="1.0.0", sa_column=Column(String(50), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    capabilities: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    params_schema: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    default_risk: str = Field(default="low", sa_column=Column(String(20), nullable=False))
    timeout_seconds: float = 30.0
    max_response_bytes: int = RESPONSE_MAX_BYTES
    enabled: bool = True
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))

    def spec(self) -> AgentSpec:
        return webhook_agent_spec({field: getattr(self, field) for field in SPEC_FIELDS})


# The columns a webhook agent's spec is made of.
SPEC_FIELDS = ("name", "version", "description", "capabilities", "params_schema", "default_risk")


def webhook_agent_spec(fields: Mapping[str, Any]) -> AgentSpec:
    """A webhook agent's spec from its SPEC_FIELDS (a row, or the row as JSON)."""
    return AgentSpec(
        name=fields["name"],
        version=fields["version"],
        description=fields["description"],
        capabilities=tuple(fields["capabilities"]),
        params_schema=fields["params_schema"],
        default_risk=fields["default_risk"],
        source="webhook",
    )
