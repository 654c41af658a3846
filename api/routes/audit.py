"""The audit log: browse (keyset-paginated) and export (CSV or JSON lines). Admins only."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.auth import require
from api.deps import INT64_MAX, EngineDep, SessionDep
from services.audit import AuditFilter, export_rows, list_audit
from services.schemas import AuditEventPublic, AuditPage

router = APIRouter(prefix="/api/audit", tags=["audit"], dependencies=[require("admin")])
COLUMNS = list(AuditEventPublic.model_fields)


@router.get("", response_model=AuditPage)
def browse(
    session: SessionDep,
    filters: Annotated[AuditFilter, Query()],
    before_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Audit events, newest first; page with `before_id`."""
    return list_audit(session=session, filters=filters, before_id=before_id, limit=limit)


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
        for event in export_rows(engine=engine, filters=filters):
            yield event.model_dump_json() + "\n"

    def as_csv() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        for event in export_rows(engine=engine, filters=filters):
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
