"""The audit log, read: filters, one page newest first, and every matching event for an export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.audit import AuditEvent
from services.schemas import AuditEventPublic, AuditPage

EXPORT_BATCH = 1000


class AuditFilter(BaseModel):
    actor: str | None = Field(default=None, max_length=100)
    action: str | None = Field(default=None, max_length=100)
    target_type: str | None = Field(default=None, max_length=50)
    target_id: str | None = Field(default=None, max_length=200)
    since: datetime | None = None
    until: datetime | None = None


def audit_query(filters: AuditFilter) -> Any:  # a SQLModel select of AuditEvent
    """Newest first, filtered."""
    query = select(AuditEvent)
    if filters.actor:
        query = query.where(AuditEvent.actor == filters.actor)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.target_type:
        query = query.where(AuditEvent.target_type == filters.target_type)
    if filters.target_id:
        query = query.where(AuditEvent.target_id == filters.target_id)
    if filters.since:
        query = query.where(col(AuditEvent.at) >= filters.since)
    if filters.until:
        query = query.where(col(AuditEvent.at) < filters.until)
    return query.order_by(col(AuditEvent.id).desc())


def list_audit(*, session: Session, filters: AuditFilter, before_id: int | None, limit: int) -> AuditPage:
    """One page of audit events, newest first."""
    query = audit_query(filters)
    if before_id is not None:
        query = query.where(col(AuditEvent.id) < before_id)
    rows = session.exec(query.limit(limit + 1)).all()
    items = [AuditEventPublic.model_validate(row, from_attributes=True) for row in rows[:limit]]
    return AuditPage(items=items, next_before_id=items[-1].id if len(rows) > limit else None)


def export_rows(*, engine: Engine, filters: AuditFilter) -> Iterator[AuditEventPublic]:
    """Every matching event, newest first, read in batches (an export of any size in bounded memory)."""
    with Session(engine) as session:
        result = session.exec(audit_query(filters).execution_options(yield_per=EXPORT_BATCH))
        for row in result:
            yield AuditEventPublic.model_validate(row, from_attributes=True)
