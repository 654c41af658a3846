"""Which agents a playbook may name in this installation: built-in, plugins and enabled webhook agents."""

from __future__ import annotations

from sqlmodel import Session, col, select

from activities.registry import agent_specs
from core.agents import AgentSpec
from core.webhook_agents import WebhookAgent


def all_agent_specs(session: Session) -> dict[str, AgentSpec]:
    """Every agent by name; a webhook agent never shadows a built-in or a plugin."""
    specs = agent_specs()
    for row in session.exec(select(WebhookAgent).where(col(WebhookAgent.enabled))):
        specs.setdefault(row.name, row.spec())
    return specs
