"""The agent marketplace's records (docs/agents.md, "Marketplace"): which agents this installation installed from
an index or a wheel, the exact wheel bytes every worker installs, install/update/remove counts, and reviews."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from core.agents import AgentSpec
from core.tables import utcnow

# Told to every worker (NOTIFY) when the installed agents change: it restarts to load them.
AGENTS_CHANNEL = "agent_installs"


class InstalledAgent(SQLModel, table=True):
    """One installed agent at its pinned version: a Python package (its wheel in agent_packages) or a webhook agent
    (its row in webhook_agents) created from an index."""

    __tablename__ = "installed_agents"
    __table_args__ = (CheckConstraint("kind IN ('python', 'webhook')", name="ck_installed_agents_kind"),)

    name: str = Field(sa_column=Column(String(63), primary_key=True))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    version: str = Field(sa_column=Column(String(50), nullable=False))
    # Where it came from: an index's name, or "" for a wheel given directly.
    index_name: str = Field(default="", sa_column=Column(String(100), nullable=False))
    package_name: str = Field(default="", sa_column=Column(String(100), nullable=False))
    # sha256 of the agent's wheel, then of each dependency wheel, in install order (python only).
    wheels: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    # The agent's spec as its package declares it (read from the installed wheel), so web processes list and
    # validate it without importing plugin code.
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    changelog: str = Field(default="", sa_column=Column(Text, nullable=False))
    previous_version: str | None = Field(default=None, sa_column=Column(String(50), nullable=True))
    installed_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    installed_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))

    def agent_spec(self) -> AgentSpec:
        return installed_agent_spec(self.spec)


def installed_agent_spec(spec: Mapping[str, Any]) -> AgentSpec:
    """An installed Python agent's spec, as read from its wheel when it was installed."""
    return AgentSpec.model_validate({**spec, "source": "plugin"})


class AgentPackage(SQLModel, table=True):
    """A wheel's exact bytes, by sha256: what every worker installs (no worker needs to reach the index)."""

    __tablename__ = "agent_packages"

    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    filename: str = Field(sa_column=Column(String(255), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class AgentInstallEvent(SQLModel, table=True):
    """Each install, update and removal: the install counts per agent and version."""

    __tablename__ = "agent_install_events"
    __table_args__ = (
        CheckConstraint("action IN ('install', 'update', 'remove')", name="ck_agent_install_events_action"),
        Index("ix_agent_install_events_agent_version", "agent", "version"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    agent: str = Field(sa_column=Column(String(63), nullable=False))
    version: str = Field(sa_column=Column(String(50), nullable=False))
    action: str = Field(sa_column=Column(String(20), nullable=False))
    actor: str = Field(default="", sa_column=Column(String(200), nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class AgentReview(SQLModel, table=True):
    """One rating (1–5) and review per user per agent, editable by its author; an admin may hide it."""

    __tablename__ = "agent_reviews"
    __table_args__ = (
        UniqueConstraint("agent", "user_id", name="uq_agent_reviews_agent_user"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="ck_agent_reviews_rating"),
    )

    id: int | None = Field(default=None, primary_key=True)
    agent: str = Field(sa_column=Column(String(63), nullable=False, index=True))
    user_id: int = Field(sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    rating: int = Field(sa_column=Column(SmallInteger, nullable=False))
    body: str = Field(default="", sa_column=Column(Text, nullable=False))
    # The version the reviewer had installed when writing (if any).
    version: str = Field(default="", sa_column=Column(String(50), nullable=False))
    hidden: bool = False
    hidden_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    hidden_reason: str = Field(default="", sa_column=Column(String(500), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
