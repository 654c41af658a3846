"""HTML forms that change incidents (work without JavaScript: post, then redirect back to the page)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile as StarletteUpload
from temporalio.service import RPCError

from api.auth import Responder, actor_of, require
from api.deps import EngineDep, Int64Id, SessionDep, SettingsDep, TemporalDep
from core.db import on_pool, session_scope
from core.errors import Invalid
from core.tables import Incident, IncidentCreate
from services.attachments import store_attachment
from services.collaboration import add_comment, add_link
from services.conversations import MESSAGE_MAX, add_user_message
from services.incidents.detail import (
    assign,
    get_incident,
)
from services.incidents.lifecycle import acknowledged, act_on_playbook, move
from services.incidents.open import IncidentNotStarted, open_incident
from web.templating import problem_page, templates

router = APIRouter(include_in_schema=False, dependencies=[require("responder")])


def _back(incident_id: int, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"/incidents/{incident_id}{anchor}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/incidents/new", response_class=HTMLResponse)
def new_incident_form(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "incidents/new.html", {"values": {}, "errors": {}})


def _new_form_again(request: Request, values: dict[str, Any], errors: dict[str, str]) -> HTMLResponse:
    """The new-incident form with what was typed and what is wrong with it (422)."""
    return templates.TemplateResponse(
        request, "incidents/new.html", {"values": values, "errors": errors}, status_code=422
    )


@router.post("/incidents/new", response_class=HTMLResponse)
async def create_incident_form(
    request: Request,
    principal: Responder,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    title: Annotated[str, Form(max_length=1000)] = "",
    service: Annotated[str, Form(max_length=1000)] = "",
    severity: Annotated[str, Form(max_length=10)] = "",
    incident_type: Annotated[str, Form(max_length=1000)] = "default",
    service_url: Annotated[str, Form(max_length=4000)] = "",
    description: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    values: dict[str, Any] = {
        "title": title,
        "service": service,
        "severity": severity or None,
        "incident_type": incident_type or "default",
        "service_url": service_url or None,
        "description": description,
    }
    try:
        data = IncidentCreate.model_validate(values)
        opened = await open_incident(
            engine=engine, temporal=temporal, settings=settings, data=data, actor=actor_of(request, principal)
        )
    except ValidationError as err:
        return _new_form_again(request, values, {str(e["loc"][0]): e["msg"] for e in err.errors()})
    except Invalid as err:  # "field: why" (service_url, or the type's playbook_id: shown at the type)
        field, _, message = str(err).partition(": ")
        return _new_form_again(request, values, {"incident_type" if field == "playbook_id" else field: message})
    except IncidentNotStarted as err:  # stored: the page links to it
        message = (
            f"Incident #{err.incident_id} was recorded, but its playbook could not start yet ({err.reason}); it "
            "starts by itself when Temporal is back: do not submit the form again"
        )
        return problem_page(request, err.status, message, f"/incidents/{err.incident_id}")
    incident = opened.incident
    assert incident.id is not None
    return _back(incident.id)


@router.post("/incidents/{incident_id}/status", response_class=HTMLResponse)
async def change_status_form(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    status_: Annotated[str, Form(alias="status", max_length=20)],
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    actor = actor_of(request, principal)
    moved = await move(
        engine=engine, incident_id=incident_id, target=status_, comment=comment, actor=actor, settings=settings
    )
    try:
        await act_on_playbook(temporal=temporal, engine=engine, settings=settings, moved=moved, actor=actor)
    except RPCError as err:
        message = f"The incident is {status_}, but its playbook could not be restarted: {err.message}"
        return problem_page(request, 503, message, f"/incidents/{incident_id}")
    return _back(incident_id)


@router.post("/incidents/{incident_id}/acknowledge", response_class=HTMLResponse)
async def acknowledge_form(request: Request, incident_id: Int64Id, principal: Responder, engine: EngineDep) -> Response:
    actor = actor_of(request, principal)
    await acknowledged(engine=engine, incident_id=incident_id, actor=actor)
    return _back(incident_id)


@router.post("/incidents/{incident_id}/comments", response_class=HTMLResponse)
def comment_form(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    session: SessionDep,
    body: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    if not body.strip():
        return problem_page(request, 422, "A comment needs some text.", f"/incidents/{incident_id}")
    incident = get_incident(session=session, incident_id=incident_id)
    comment = add_comment(session=session, incident=incident, body=body, actor=actor_of(request, principal))
    comment_id = comment.id  # read before the commit expires it
    session.commit()
    return _back(incident_id, f"#comment-{comment_id}")


@router.post("/incidents/{incident_id}/messages", response_class=HTMLResponse)
def message_form(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    session: SessionDep,
    content: Annotated[str, Form(max_length=MESSAGE_MAX)] = "",
) -> Response:
    if not content.strip():
        return problem_page(request, 422, "A message needs some text.", f"/incidents/{incident_id}")
    incident = get_incident(session=session, incident_id=incident_id)
    message, _ = add_user_message(
        session=session, incident=incident, content=content, actor=actor_of(request, principal), idempotency_key=None
    )
    return _back(incident_id, f"#message-{message.id}")


@router.post("/incidents/{incident_id}/links", response_class=HTMLResponse)
def link_form(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    session: SessionDep,
    kind: Annotated[str, Form(max_length=20)],
    related_incident_id: Annotated[str, Form(max_length=30)],
) -> Response:
    back = f"/incidents/{incident_id}"
    incident = get_incident(session=session, incident_id=incident_id)
    other_id = related_incident_id.strip().lstrip("#")
    related = session.get(Incident, int(other_id)) if other_id.isdigit() and len(other_id) < 19 else None
    if kind not in ("related", "duplicate_of", "caused_by"):
        return problem_page(request, 422, f"Unknown link type {kind}.", back)
    if related is None:
        return problem_page(request, 422, f"There is no incident {related_incident_id}.", back)
    try:
        add_link(session=session, incident=incident, related=related, kind=kind, actor=actor_of(request, principal))
    except ValueError as err:  # a link to itself (LinkConflict, a 409, is the problem page's as everywhere)
        return problem_page(request, 422, str(err), back)
    return _back(incident_id)


@router.post("/incidents/{incident_id}/attachments", response_class=HTMLResponse)
async def attachment_form(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    engine: EngineDep,
    settings: SettingsDep,
) -> Response:
    # The form is read only now, after the role and CSRF checks (the guard parsed it for the CSRF field; a
    # body parameter would make FastAPI spool the upload before any check).
    back = f"/incidents/{incident_id}"
    file = (await request.form()).get("file")
    if not isinstance(file, StarletteUpload):
        return problem_page(request, 422, "Choose a file to upload.", back)
    actor = actor_of(request, principal)

    def _store() -> None:
        with session_scope(engine) as session:
            store_attachment(
                session=session,
                root=settings.effective_attachments_dir,
                incident=get_incident(session=session, incident_id=incident_id),
                source=file.file,
                filename=file.filename,
                declared_type=file.content_type,
                max_bytes=settings.attachment_max_bytes,
                actor=actor,
            )

    await on_pool(engine, _store)
    return _back(incident_id)


@router.post("/incidents/{incident_id}/assignee", response_class=HTMLResponse)
def assignee_form(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    session: SessionDep,
    user_id: Annotated[str, Form(max_length=20)] = "",
    team_id: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Assign from the page ("me" is the person posting; empty unassigns)."""
    back = f"/incidents/{incident_id}"
    user = principal.user_id if user_id == "me" else _optional_id(user_id)
    team = _optional_id(team_id)
    if user is False or team is False:
        return problem_page(request, 422, "Pick a user and a team from the lists.", back)
    assign(
        session=session,
        incident=get_incident(session=session, incident_id=incident_id),
        user_id=user,
        team_id=team,
        actor=actor_of(request, principal),
    )
    return _back(incident_id)


def _optional_id(value: str) -> int | None | bool:
    """A form id: None when empty, False when not a valid id."""
    value = value.strip()
    if not value:
        return None
    return int(value) if value.isdigit() and 0 < int(value) < 2**31 else False
