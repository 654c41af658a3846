"""Server-rendered pages (Jinja2, autoescaped)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse

from api.auth import require
from api.deps import Int64Id, SessionDep, SettingsDep
from api.incident_query import IncidentFilter, search_incidents
from api.incident_service import IncidentNotFound, get_incident, incident_detail
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])


@router.get("/", response_class=HTMLResponse)
def incident_list_page(request: Request, session: SessionDep) -> HTMLResponse:
    rows, total, _ = search_incidents(session=session, where=IncidentFilter(), sort="newest", limit=50, cursor=None)
    return templates.TemplateResponse(request, "incidents/list.html", {"incidents": rows, "total": total})


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident_detail_page(
    request: Request, incident_id: Int64Id, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    try:
        incident = get_incident(session=session, incident_id=incident_id)
    except IncidentNotFound as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from err
    detail = incident_detail(
        session=session,
        incident=incident,
        ui_url=settings.effective_temporal_ui_url,
        namespace=settings.temporal_namespace,
    )
    return templates.TemplateResponse(request, "incidents/detail.html", {"incident": detail})
