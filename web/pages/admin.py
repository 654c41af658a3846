"""Admin pages: the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.auth import require
from api.deps import INT64_MAX, SessionDep
from services.audit import AuditFilter, list_audit
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("admin")])


@router.get("/admin/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    session: SessionDep,
    filters: Annotated[AuditFilter, Query()],
    before_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
) -> HTMLResponse:
    page = list_audit(session=session, filters=filters, before_id=before_id, limit=100)
    return templates.TemplateResponse(
        request, "admin/audit.html", {"page": page, "filters": filters.model_dump(exclude_none=True)}
    )
