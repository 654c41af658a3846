"""Incident pages (Jinja2, autoescaped) and the partials htmx swaps in when live events arrive."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, select

from api.auth import require
from api.deps import Int64Id, SessionDep, SettingsDep
from core.errors import CursorError
from core.identity import Team, User
from core.markdown import render_markdown
from core.settings import Settings
from core.tables import INCIDENT_TRANSITIONS
from services.approvals import approval_queue
from services.attachments import list_attachments
from services.collaboration import list_comments, timeline
from services.conversations import recent_messages
from services.incidents.detail import detail_for, get_incident
from services.incidents.query import IncidentFilter, IncidentSort, search_incidents
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
PAGE_SIZE = 50
TIMELINE_SHOWN = 500
ASSIGNABLE_SHOWN = 500
Part = Literal["facts", "workflow", "approvals", "conversation", "comments", "attachments", "timeline", "links"]
CONVERSATION_SHOWN = 200


def _list_context(session: Session, where: IncidentFilter, sort: IncidentSort, cursor: str | None) -> dict[str, Any]:
    try:
        found = search_incidents(session=session, where=where, sort=sort, limit=PAGE_SIZE, cursor=cursor)
    except CursorError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
    params = [(k, v) for k, v in where.model_dump(exclude_defaults=True).items() if not isinstance(v, list)]
    params += [
        (k, item) for k, v in where.model_dump(exclude_defaults=True).items() if isinstance(v, list) for item in v
    ]
    if sort != "newest":
        params.append(("sort", sort))
    query = urlencode(params)
    return {
        "incidents": found.incidents,
        "total": found.total,
        "total_capped": found.capped,
        "where": where,
        "sort": sort,
        "query": query,
        "cursor": cursor,
        "next_url": f"/?{urlencode([*params, ('cursor', found.next_cursor)])}" if found.next_cursor else None,
    }


@router.get("/", response_class=HTMLResponse)
def incident_list_page(
    request: Request,
    session: SessionDep,
    where: Annotated[IncidentFilter, Query()],
    sort: IncidentSort = "newest",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    context = _list_context(session, where, sort, cursor)
    context["people"], context["teams"] = assignables(session)
    return templates.TemplateResponse(request, "incidents/list.html", context)


@router.get("/incidents/partials/rows", response_class=HTMLResponse)
def incident_rows_partial(
    request: Request,
    session: SessionDep,
    where: Annotated[IncidentFilter, Query()],
    sort: IncidentSort = "newest",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    context = _list_context(session, where, sort, cursor)
    return templates.TemplateResponse(request, "incidents/_rows.html", context)


def detail_context(session: Session, settings: Settings, incident_id: int, part: Part | None = None) -> dict[str, Any]:
    """What the incident page shows (part None), or only what one of its partials needs: a live event
    refreshes a part, and that refresh should not load the rest of the page."""
    incident = get_incident(session=session, incident_id=incident_id)  # NotFound: 404
    context: dict[str, Any] = {
        "incident": detail_for(session=session, incident=incident, settings=settings),
        "max_attachment_bytes": settings.attachment_max_bytes,
    }
    if part in (None, "facts"):
        user = session.get(User, incident.assignee_user_id) if incident.assignee_user_id else None
        team = session.get(Team, incident.assignee_team_id) if incident.assignee_team_id else None
        context["assignee"] = {
            "user": user.display_name or user.username if user else None,
            "team": team.name if team else None,
        }
        context["transitions"] = INCIDENT_TRANSITIONS.get(incident.status, ())
        context["people"], context["teams"] = assignables(session)
    if part in (None, "conversation"):
        context["conversation"] = recent_messages(session=session, incident_id=incident_id, limit=CONVERSATION_SHOWN)
    if part in (None, "comments"):
        comments = list_comments(session=session, incident_id=incident_id, after_id=0, limit=1000)
        context["comments"] = [(c, render_markdown(c.body)) for c in comments]
    if part in (None, "attachments"):
        context["attachments"] = list_attachments(session=session, incident_id=incident_id)
    if part in (None, "approvals"):
        context["approvals"] = approval_queue(session=session, status_filter="all", incident_id=incident_id)
    if part in (None, "timeline"):
        context["timeline"] = timeline(session=session, incident_id=incident_id, after_id=0, limit=TIMELINE_SHOWN)
    return context


def assignables(session: Session) -> tuple[list[User], list[Team]]:
    """The people and teams an incident can be assigned to (the assign form, the list's filters)."""
    people = session.exec(
        select(User).where(col(User.is_active)).order_by(col(User.username)).limit(ASSIGNABLE_SHOWN)
    ).all()
    teams = session.exec(select(Team).order_by(col(Team.name)).limit(ASSIGNABLE_SHOWN)).all()
    return list(people), list(teams)


def _can_act(request: Request) -> bool:
    principal = getattr(request.state, "principal", None)  # resolved by the router's require("viewer")
    return principal is not None and principal.can("responder")


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
def incident_detail_page(
    request: Request, incident_id: Int64Id, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    context = detail_context(session, settings, incident_id)
    context["can_act"] = _can_act(request)
    return templates.TemplateResponse(request, "incidents/detail.html", context)


@router.get("/incidents/{incident_id}/partials/{part}", response_class=HTMLResponse)
def incident_partial(
    request: Request, incident_id: Int64Id, part: Part, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    context = detail_context(session, settings, incident_id, part)
    context["can_act"] = _can_act(request)
    return templates.TemplateResponse(request, f"incidents/_{part}.html", context)
