"""The append-only audit log: who did what to which target, when and from where, with before/after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, Session, SQLModel

from core.payloads import DecisionOrigin
from core.tables import utcnow


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_target", "target_type", "target_id"),
        Index("ix_audit_events_actor", "actor_user_id", "at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    actor_user_id: int | None = None
    actor: str = Field(sa_column=Column(String(100), nullable=False))  # username at the time, or "system"
    actor_kind: str = Field(sa_column=Column(String(20), nullable=False))  # session | token | cli | system
    action: str = Field(sa_column=Column(String(100), nullable=False, index=True))  # e.g. incident.create
    target_type: str = Field(sa_column=Column(String(50), nullable=False))
    target_id: str | None = Field(default=None, sa_column=Column(String(200)))
    ip: str | None = Field(default=None, sa_column=Column(String(64)))
    user_agent: str | None = Field(default=None, sa_column=Column(String(300)))
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where; built from the request (or the CLI / system)."""

    user_id: int | None
    name: str
    kind: str
    ip: str | None = None
    user_agent: str | None = None

    def origin(self) -> DecisionOrigin:
        """Who and from where, as a workflow update carries it to the audit row its record writes."""
        return DecisionOrigin(self.user_id, self.kind, self.ip, (self.user_agent or "")[:300] or None)


SYSTEM = Actor(user_id=None, name="system", kind="system")


def record_audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: object = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row to the caller's transaction, so it commits (or not) with the change itself."""
    event = AuditEvent(
        actor_user_id=actor.user_id,
        actor=actor.name,
        actor_kind=actor.kind,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        ip=actor.ip,
        user_agent=(actor.user_agent or None) and actor.user_agent[:300],
        before=before,
        after=after,
    )
    session.add(event)
    return event
