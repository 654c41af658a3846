"""JSON API for incidents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.service import RPCError

from api.auth import Responder, actor_of, require
from api.deps import INT32_MAX, INT64_MAX, EngineDep, Int64Id, SettingsDep, TemporalDep
from core.audit import Actor
from core.settings import Settings
from core.tables import IncidentCreate, IncidentStatus
from services.collaboration import timeline
from services.incidents.detail import (
    assign,
    detail_for,
    get_incident,
    in_read_session,
    in_session,
    new_incident_detail,
)
from services.incidents.lifecycle import acknowledged, act_on_playbook, move
from services.incidents.open import open_incident
from services.incidents.query import PUBLIC_FIELDS, IncidentFilter, IncidentSort, search_incidents
from services.schemas import IncidentDetail, IncidentPage, TimelineEntry, TimelinePage

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[require("viewer")])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Repeat a create safely: the same key returns the incident created first.",
    ),
]


async def _detail(engine: Engine, settings: Settings, incident_id: int) -> IncidentDetail:
    """The incident's detail, read in a worker thread (see in_session)."""
    return await in_read_session(
        engine,
        lambda session: detail_for(session=session, settings=settings, incident=incident_id),
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=IncidentDetail)
async def create_incident(
    request: Request,
    principal: Responder,
    data: IncidentCreate,
    response: Response,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> IncidentDetail:
    """Record an incident and start its IncidentWorkflow (`incident-<id>`)."""
    opened = await open_incident(
        engine=engine,
        temporal=temporal,
        settings=settings,
        data=data,
        actor=actor_of(request, principal),
        idempotency_key=idempotency_key,
    )
    incident = opened.incident
    if opened.created:
        return new_incident_detail(incident=incident, settings=settings)
    response.status_code = status.HTTP_200_OK  # the one stored first under this Idempotency-Key, as it is now
    assert incident.id is not None  # stored
    return await _detail(engine, settings, incident.id)


@router.get("", response_model=IncidentPage)
async def list_incidents_route(
    engine: EngineDep,
    where: Annotated[IncidentFilter, Query()],
    sort: IncidentSort = "newest",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> IncidentPage:
    """Incidents filtered (status and severity repeat: `?status=open&status=in_progress`), sorted, one page at
    a time: pass `next_cursor` back as `cursor`. `total` counts the matches up to 10,000 (500 with a text
    search `q`); past that it is the cap and `total_capped` is true."""

    def _page(session: Session) -> IncidentPage:
        found = search_incidents(session=session, where=where, sort=sort, limit=limit, cursor=cursor)
        # One validation of the page, its items as dicts: dict(zip(...)) because Row._asdict() took 7 % of the web's
        # CPU under bench.load, and one call because a model_validate per item cost 50 trips into pydantic-core.
        return IncidentPage.model_validate({
            "items": [dict(zip(PUBLIC_FIELDS, row, strict=True)) for row in found.incidents],
            "total": found.total,
            "total_capped": found.capped,
            "limit": limit,
            "next_cursor": found.next_cursor,
        })  # fmt: skip

    return await in_read_session(engine, _page)  # the count and the page need not share a snapshot


@router.get("/{incident_id}", response_model=IncidentDetail)
async def get_incident_route(incident_id: Int64Id, engine: EngineDep, settings: SettingsDep) -> IncidentDetail:
    """One incident with its workflow status and steps."""
    return await _detail(engine, settings, incident_id)


class AssigneeUpdate(BaseModel):
    user_id: int | None = Field(default=None, ge=1, le=INT32_MAX)
    team_id: int | None = Field(default=None, ge=1, le=INT32_MAX)


@router.put("/{incident_id}/assignee", response_model=IncidentDetail)
async def assign_incident(
    request: Request,
    incident_id: Int64Id,
    body: AssigneeUpdate,
    principal: Responder,
    engine: EngineDep,
    settings: SettingsDep,
) -> IncidentDetail:
    """Assign the incident to a user and/or a team (nulls unassign)."""
    actor = actor_of(request, principal)
    return await in_session(engine, lambda session: _assign(session, incident_id, body, actor, settings))


def _assign(
    session: Session, incident_id: int, body: AssigneeUpdate, actor: Actor, settings: Settings
) -> IncidentDetail:
    incident = get_incident(session=session, incident_id=incident_id)
    assign(session=session, incident=incident, user_id=body.user_id, team_id=body.team_id, actor=actor)
    return detail_for(session=session, settings=settings, incident=incident)


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetail)
async def acknowledge_incident(
    request: Request, incident_id: Int64Id, principal: Responder, engine: EngineDep, settings: SettingsDep
) -> IncidentDetail:
    """Say you have it: sets `acknowledged_at` (once; a repeat answers the incident as it is). Only people
    acknowledge; a resolved or closed incident is a 409."""
    actor = actor_of(request, principal)
    await acknowledged(engine=engine, incident_id=incident_id, actor=actor)
    return await _detail(engine, settings, incident_id)


class StatusChange(BaseModel):
    status: IncidentStatus
    comment: str = Field(default="", max_length=2000)


@router.post("/{incident_id}/status", response_model=IncidentDetail)
async def change_status(
    request: Request,
    incident_id: Int64Id,
    body: StatusChange,
    principal: Responder,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> IncidentDetail:
    """Move the incident along its lifecycle (open → in_progress → resolved → closed; resolved|closed →
    reopened → in_progress); any other move is a 409 naming the allowed ones. Reopening restarts the
    playbook, resumes its failed run, or leaves it, as the incident type's template says (default restart)."""
    actor = actor_of(request, principal)
    moved = await move(
        engine=engine, incident_id=incident_id, target=body.status, comment=body.comment, actor=actor,
        settings=settings,
    )  # fmt: skip
    try:
        await act_on_playbook(temporal=temporal, engine=engine, settings=settings, moved=moved, actor=actor)
    except RPCError as err:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"incident {incident_id} is {body.status}, but its playbook could not be "
            f"{'resumed' if moved.reopen_action == 'resume' else 'restarted'} ({err.message})",
        ) from err

    return await _detail(engine, settings, incident_id)


@router.get("/{incident_id}/timeline", response_model=TimelinePage)
async def incident_timeline(
    incident_id: Int64Id,
    engine: EngineDep,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> TimelinePage:
    """Everything that happened to the incident, oldest first; page on with `after_id`."""

    def _page(session: Session) -> TimelinePage:
        get_incident(session=session, incident_id=incident_id)
        rows = timeline(session=session, incident_id=incident_id, after_id=after_id, limit=limit)
        items = [TimelineEntry.model_validate(row, from_attributes=True) for row in rows]
        return TimelinePage(items=items, next_after_id=items[-1].id if len(items) == limit else None)

    return await in_read_session(engine, _page)
