"""The services pages: the list (status, streak, uptime, open incident; live), one service's page (its check,
dependencies, maintenance, recent results, incidents and uptime graphs) and the forms that change services.

Collection pages live under names a service cannot have (names start with a letter or digit): /services/_new,
/services/_rows. Forms post, then redirect (they work without JavaScript); a form with mistakes comes back with each
message next to its field (422). Changes go through services/monitored.py, as the API's do: same checks, same audit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.auth import Responder, actor_of, require
from api.deps import Int64Id, SessionDep, SettingsDep
from core.errors import Conflict, Invalid, NotFound
from core.monitoring import MaintenanceWindow, MaintenanceWindowCreate
from core.services import SERVICE_NAME, ServiceBase, ServiceCreate
from core.tables import utcnow
from services import maintenance, monitored
from services.service_status import (
    DISPLAY_STATUSES,
    one_service_row,
    service_detail,
    service_filters,
    service_list_page,
)
from web.pages.service_form import form_errors, form_values, service_body
from web.templating import problem_page, templates

viewer = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
responder = APIRouter(include_in_schema=False, dependencies=[require("responder")])
ServiceName = Annotated[str, Path(pattern=SERVICE_NAME)]
Filter = Annotated[str | None, Query(max_length=100)]
RANGES = ("1h", "24h", "7d", "30d", "90d", "1y")


def duration(value: timedelta | float) -> str:
    """A span as people say it: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if seconds < 90:
        return f"{max(seconds, 0)} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 2:
        return f"{minutes} min"
    if days < 2:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"


def since(at: datetime) -> str:
    return duration(utcnow() - at)


def seconds(value: float) -> str:
    return f"{value:g} s" if value < 90 else duration(value)


templates.env.filters.update(duration=duration, since=since, seconds=seconds)


def _back(name: str, query: str = "") -> RedirectResponse:
    return RedirectResponse(f"/services/{name}{query}", status_code=status.HTTP_303_SEE_OTHER)


def _list_context(
    session: SessionDep, tag: str | None, team: str | None, status_: str | None, q: str | None, offset: int
) -> dict[str, Any]:
    wanted = status_ if status_ in DISPLAY_STATUSES else None
    page = service_list_page(
        session=session, tag=tag or None, team=team or None, status=wanted, q=q or None, offset=offset
    )
    tags, teams = service_filters(session)
    filters = {"tag": tag or "", "team": team or "", "status": wanted or "", "q": q or ""}
    query = urlencode({k: v for k, v in filters.items() if v})
    return {
        "rows": page.rows,
        "page": page,
        "tags": tags,
        "teams": teams,
        "filters": filters,
        "query": query,
        "statuses": DISPLAY_STATUSES,
    }


Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Search = Annotated[str | None, Query(max_length=100)]


@viewer.get("/services", response_class=HTMLResponse)
def services_page(
    request: Request, session: SessionDep, tag: Filter = None, team: Filter = None,
    status_: Annotated[str | None, Query(alias="status", max_length=20)] = None, q: Search = None, offset: Offset = 0,
) -> HTMLResponse:  # fmt: skip
    context = _list_context(session, tag, team, status_, q, offset)
    return templates.TemplateResponse(request, "services/list.html", {**context, "ranges": RANGES})


@viewer.get("/services/_rows", response_class=HTMLResponse)
def services_rows(
    request: Request, session: SessionDep, tag: Filter = None, team: Filter = None,
    status_: Annotated[str | None, Query(alias="status", max_length=20)] = None, q: Search = None, offset: Offset = 0,
) -> HTMLResponse:  # fmt: skip
    context = _list_context(session, tag, team, status_, q, offset)
    return templates.TemplateResponse(request, "services/_rows.html", context)


@responder.get("/services/_new", response_class=HTMLResponse)
def new_service_form(request: Request) -> HTMLResponse:
    return _form(request, None, form_values({"check": {"type": "http"}}), {})


@responder.post("/services/_new", response_class=HTMLResponse)
async def create_service_form(
    request: Request, principal: Responder, session: SessionDep, settings: SettingsDep
) -> Response:
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    try:
        data = ServiceCreate.model_validate({"name": values.get("name", "").strip(), **service_body(values, {})})
        row = monitored.register_service(
            session=session, settings=settings, data=data, actor=actor_of(request, principal)
        )
    except (ValidationError, Invalid, ValueError) as err:
        return _form(request, None, values, form_errors(err))
    except Conflict:
        return _form(request, None, values, {"name": "a service of this name exists: pick another, or edit that one"})
    return _back(row.name)


@viewer.get("/services/{name}", response_class=HTMLResponse)
def service_page(
    request: Request, name: ServiceName, session: SessionDep, settings: SettingsDep,
    checking: Annotated[bool, Query()] = False,
) -> HTMLResponse:  # fmt: skip
    service = monitored.find_service(session=session, name=name)
    detail = service_detail(session=session, row=one_service_row(session=session, service=service), service=service)
    context = {
        "d": detail, "ranges": RANGES, "checking": checking, "window_seconds": settings.monitor_window_seconds,
    }  # fmt: skip
    return templates.TemplateResponse(request, "services/detail.html", context)


@viewer.get("/services/{name}/partials/{part}", response_class=HTMLResponse)
def service_partial(
    request: Request, name: ServiceName, part: Literal["state", "results"], session: SessionDep
) -> HTMLResponse:
    service = monitored.find_service(session=session, name=name)
    detail = service_detail(session=session, row=one_service_row(session=session, service=service), service=service)
    return templates.TemplateResponse(request, f"services/_{part}.html", {"d": detail})


@responder.get("/services/{name}/edit", response_class=HTMLResponse)
def edit_service_form(request: Request, name: ServiceName, session: SessionDep) -> HTMLResponse:
    service = monitored.find_service(session=session, name=name)
    return _form(request, name, form_values(service.config), {})


@responder.post("/services/{name}/edit", response_class=HTMLResponse)
async def edit_service(
    request: Request, name: ServiceName, principal: Responder, session: SessionDep, settings: SettingsDep
) -> Response:
    stored = monitored.find_service(session=session, name=name).config
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    try:
        body = ServiceBase.model_validate(service_body(values, stored))
        monitored.replace_service(
            session=session, settings=settings, name=name, body=body, actor=actor_of(request, principal)
        )
    except (ValidationError, Invalid, ValueError) as err:
        return _form(request, name, values, form_errors(err))
    return _back(name)


@responder.post("/services/{name}/pause", response_class=HTMLResponse)
def pause_service(request: Request, name: ServiceName, principal: Responder, session: SessionDep) -> Response:
    monitored.set_paused(session=session, name=name, paused=True, actor=actor_of(request, principal))
    return _back(name)


@responder.post("/services/{name}/resume", response_class=HTMLResponse)
def resume_service(request: Request, name: ServiceName, principal: Responder, session: SessionDep) -> Response:
    monitored.set_paused(session=session, name=name, paused=False, actor=actor_of(request, principal))
    return _back(name)


@responder.post("/services/{name}/check", response_class=HTMLResponse)
def check_now(request: Request, name: ServiceName, principal: Responder, session: SessionDep) -> Response:
    monitored.request_check(session=session, name=name, actor=actor_of(request, principal))
    return _back(name, "?checking=true")


@responder.post("/services/{name}/delete", response_class=HTMLResponse)
async def delete_service(request: Request, name: ServiceName, principal: Responder, session: SessionDep) -> Response:
    confirm = str((await request.form()).get("confirm", "")).strip()
    if confirm != name:
        message = f"To delete {name}, type its name in the box next to the Delete button."
        return problem_page(request, 422, message, f"/services/{name}/edit")
    monitored.remove_service(session=session, name=name, actor=actor_of(request, principal))
    return RedirectResponse("/services", status_code=status.HTTP_303_SEE_OTHER)


MAINTENANCE_DURATIONS = {"30m": 30, "1h": 60, "2h": 120, "4h": 240, "8h": 480, "24h": 1440}


@responder.post("/services/{name}/maintenance", response_class=HTMLResponse)
async def schedule_maintenance(
    request: Request, name: ServiceName, principal: Responder, session: SessionDep
) -> Response:
    """Silence this service: from a start (UTC, now when empty) for a duration; the same checks as the API."""
    monitored.find_service(session=session, name=name)  # NotFound: 404
    form = await request.form()
    starts = str(form.get("starts_at", "")).strip()
    minutes = MAINTENANCE_DURATIONS.get(str(form.get("duration", "")))
    back = f"/services/{name}"
    if minutes is None:
        return problem_page(request, 422, f"duration: pick one of {', '.join(MAINTENANCE_DURATIONS)}", back)
    try:
        starts_at = datetime.fromisoformat(starts).replace(tzinfo=UTC) if starts else utcnow()
    except ValueError:
        return problem_page(request, 422, f"starts_at: {starts[:40]!r} is not a date and time (UTC)", back)
    try:
        body = MaintenanceWindowCreate(
            service=name, starts_at=starts_at, ends_at=starts_at + timedelta(minutes=minutes),
            reason=str(form.get("reason", "")).strip(),
        )  # fmt: skip
    except ValidationError as err:
        return problem_page(request, 422, "; ".join(str(e["msg"]) for e in err.errors()), back)
    maintenance.create_window(session=session, body=body, actor=actor_of(request, principal))  # Invalid: 422 page
    return _back(name)


@responder.post("/services/{name}/maintenance/{window_id}/end", response_class=HTMLResponse)
def end_maintenance(
    request: Request, name: ServiceName, window_id: Int64Id, principal: Responder, session: SessionDep
) -> Response:
    """End a window of this service now (a window of every service is ended from the API: it silences others)."""
    row = session.get(MaintenanceWindow, window_id)
    if row is None or row.service != name:
        raise NotFound(f"{name} has no maintenance window {window_id}")
    maintenance.end_window(session=session, window_id=window_id, actor=actor_of(request, principal))
    return _back(name)


def _form(request: Request, name: str | None, values: dict[str, str], errors: dict[str, str]) -> HTMLResponse:
    """The create (name None) or edit form with what was typed and what is wrong with it (422 when anything is)."""
    context = {"name": name, "values": values, "errors": errors}
    return templates.TemplateResponse(request, "services/form.html", context, status_code=422 if errors else 200)


router = APIRouter()
router.include_router(responder)  # first: GET /services/_new is not a service's page
router.include_router(viewer)
