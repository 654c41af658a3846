"""Conversations: the append-only message log every agent of an incident reads and adds to, and the immutable
snapshots of the exact context each agent attempt received.

Both tables are append-only in the database itself (migration 0007): a trigger refuses DELETE, TRUNCATE and
any UPDATE of a message except setting its embedding (which the indexer fills in after the insert, off the
agents' hot path).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.schema import Computed
from sqlmodel import Field, Session, SQLModel

from core.events import incident_event
from core.redact import redact_text
from core.tables import utcnow
from core.tokens import count_tokens

ROLES = ("system", "user", "assistant", "tool")
Role = Literal["system", "user", "assistant", "tool"]
MESSAGE_KINDS = ("message", "summary")
EMBEDDING_DIMENSIONS = 384
CONTENT_MAX = 100_000  # characters of one message; agents' longer output is cut (the excerpt says so)
# The text search configuration of the `search` column and of every keyword query: they must agree.
TEXT_SEARCH_CONFIG = "english"
MESSAGES_CHANNEL = "agent_monitor_messages"  # NOTIFY: new messages wait for the embedding indexer


class ConversationMessage(SQLModel, table=True):
    """One message of an incident's conversation: an agent's finding, a tool's output, an operator's input,
    or a summary standing in for older messages (`kind` summary, `covers` the ids it replaces)."""

    __tablename__ = "conversation_messages"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_conversation_messages_dedupe_key"),
        CheckConstraint("role IN ('system', 'user', 'assistant', 'tool')", name="ck_conversation_messages_role"),
        CheckConstraint("kind IN ('message', 'summary')", name="ck_conversation_messages_kind"),
        Index("ix_conversation_messages_incident_id_id", "incident_id", "id"),
        Index("ix_conversation_messages_workflow_id_id", "workflow_id", "id"),
        Index("ix_conversation_messages_created_at", "created_at"),
        Index("ix_conversation_messages_agent", "agent"),
        Index("ix_conversation_messages_search", "search", postgresql_using="gin"),
        Index("ix_conversation_messages_unembedded", "id", postgresql_where=text("embedding IS NULL")),
        Index(
            "ix_conversation_messages_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False))
    workflow_id: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    step_id: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    agent: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    role: str = Field(sa_column=Column(String(20), nullable=False))
    kind: str = Field(default="message", sa_column=Column(String(20), nullable=False))
    content: str = Field(sa_column=Column(Text, nullable=False))
    # Token count, author, model, timings, attachment refs … ("metadata" is taken by SQLAlchemy).
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    covers: list[int] | None = Field(default=None, sa_column=Column(ARRAY(BigInteger), nullable=True))
    # Who wrote it once: a repeated append with the same key (an activity that ran twice) adds nothing.
    dedupe_key: str | None = Field(default=None, sa_column=Column(String(300), nullable=True))
    embedding: Any = Field(default=None, sa_column=Column(Vector(EMBEDDING_DIMENSIONS), nullable=True))
    embedding_model: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    search: Any = Field(
        default=None,
        sa_column=Column(TSVECTOR, Computed(f"to_tsvector('{TEXT_SEARCH_CONFIG}', content)", persisted=True)),
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class ContextSnapshot(SQLModel, table=True):
    """The exact context one agent attempt received; a retry or a new run of the step gets the next version."""

    __tablename__ = "context_snapshots"
    __table_args__ = (
        UniqueConstraint("activity_key", name="uq_context_snapshots_activity_key"),
        UniqueConstraint("workflow_id", "step_id", "version", name="uq_context_snapshots_step_version"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    activity_key: str = Field(sa_column=Column(String(400), nullable=False))  # as agent_runs: one per attempt
    workflow_id: str = Field(sa_column=Column(String(200), nullable=False))
    incident_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    step_id: str = Field(sa_column=Column(String(100), nullable=False))
    agent: str = Field(sa_column=Column(String(100), nullable=False))
    run: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    attempt: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))  # sha256 of the canonical JSON
    tokens: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    context: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


def announce_message(session: Session, message: ConversationMessage, *, actor: str) -> None:
    """A stored message's timeline event (live on the incident page) and the indexer's wake-up, in the caller's
    transaction."""
    assert message.id is not None
    incident_event(
        session,
        kind="message.created",
        incident_id=message.incident_id,
        actor=actor,
        message_id=message.id,
        role=message.role,
        excerpt=message.content[:200],
    )
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": MESSAGES_CHANNEL})


def append_tool_message(
    session: Session, *, incident_id: int, workflow_id: str | None, content: str, actor: str, meta: dict[str, Any]
) -> ConversationMessage:
    """Append what a tool observed (an alert, a monitor's check) as a role-`tool` message the incident's agents
    read, redacted and cut to CONTENT_MAX, and announce it; in the caller's transaction."""
    content = redact_text(content)[:CONTENT_MAX]
    message = ConversationMessage(
        incident_id=incident_id,
        workflow_id=workflow_id,
        role="tool",
        content=content,
        meta={"author": actor, **meta, "tokens": count_tokens(content)},
    )
    session.add(message)
    session.flush()
    announce_message(session, message, actor=actor)
    return message
