"""The audit log: browse (keyset-paginated) and export (CSV or JSON lines). Admins only."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from api.auth import require
from api.deps import INT64_MAX, EngineDep, SessionDep
from core.audit import AuditEvent
from services.schemas import AuditEventPublic, AuditPage

router = APIRouter(prefix="/api/audit", tags=["audit"], dependencies=[require("admin")])
EXPORT_BATCH = 1000
COLUMNS = list(AuditEventPublic.model_fields)


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


@router.get("", response_model=AuditPage)
def browse(
    session: SessionDep,
    filters: Annotated[AuditFilter, Query()],
    before_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Audit events, newest first; page with `before_id`."""
    return list_audit(session=session, filters=filters, before_id=before_id, limit=limit)


def _export_rows(engine: Engine, filters: AuditFilter) -> Iterator[AuditEventPublic]:
    with Session(engine) as session:
        result = session.exec(audit_query(filters).execution_options(yield_per=EXPORT_BATCH))
        for row in result:
            yield AuditEventPublic.model_validate(row, from_attributes=True)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "the events"}},
)
def export(
    engine: EngineDep,
    filters: Annotated[AuditFilter, Query()],
    format: Literal["jsonl", "csv"] = "jsonl",  # noqa: A002
) -> StreamingResponse:
    """Every matching event, streamed: JSON lines or CSV (before/after as JSON text)."""

    def jsonl() -> Iterator[str]:
        for event in _export_rows(engine, filters):
            yield event.model_dump_json() + "\n"

    def as_csv() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        for event in _export_rows(engine, filters):
            data = event.model_dump(mode="json")
            writer.writerow([json.dumps(data[c]) if c in ("before", "after") else data[c] for c in COLUMNS])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    return StreamingResponse(
        jsonl() if format == "jsonl" else as_csv(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit.{format}"'},
    )
