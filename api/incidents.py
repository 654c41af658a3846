"""JSON API for incidents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from api.auth import Responder, actor_of, require
from api.deps import INT32_MAX, EngineDep, Int64Id, SessionDep, SettingsDep, TemporalDep
from api.incident_service import (
    IncidentNotFound,
    WorkflowConflict,
    get_incident,
    incident_detail,
    insert_incident,
    list_incidents,
    start_incident_workflow,
)
from api.playbook_service import PlaybookNotFound
from api.schemas import IncidentDetail, IncidentPage, IncidentPublic
from core.audit import record_audit
from core.db import session_scope
from core.identity import Team, User
from core.settings import Settings
from core.tables import INCIDENT_TRANSITIONS, Incident, IncidentCreate, IncidentStatus, Severity, utcnow

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[require("viewer")])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Repeat a create safely: the same key returns the incident created first.",
    ),
]


def _found(session: Session, incident_id: int) -> Incident:
    """The incident, or a 404 naming it."""
    try:
        return get_incident(session=session, incident_id=incident_id)
    except IncidentNotFound as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(err)) from err


def _detail(session: Session, incident: Incident, settings: Settings) -> IncidentDetail:
    return incident_detail(
        session=session,
        incident=incident,
        ui_url=settings.effective_temporal_ui_url,
        namespace=settings.temporal_namespace,
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

    def _insert():
        with session_scope(engine) as session:
            incident, created = insert_incident(
                session=session,
                data=data,
                idempotency_key=idempotency_key,
                settings=settings,
                actor=actor_of(request, principal),
            )
            session.expunge(incident)
            return incident, created

    try:
        incident, created = await run_in_threadpool(_insert)
    except PlaybookNotFound as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"playbook_id: {err}") from err
    if not created:
        response.status_code = status.HTTP_200_OK
    try:
        await start_incident_workflow(
            temporal=temporal, engine=engine, incident=incident, settings=settings, fresh=created
        )
    except WorkflowConflict as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from err
    except RPCError as err:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"incident {incident.id} was recorded but its workflow could not start ({err.message}); "
            "repeat the request with the same Idempotency-Key to retry",
        ) from err

    def _load_detail() -> IncidentDetail:
        with session_scope(engine) as session:
            return _detail(session, _found(session, incident.id), settings)  # type: ignore[arg-type]

    return await run_in_threadpool(_load_detail)


@router.get("", response_model=IncidentPage)
def list_incidents_route(
    session: SessionDep,
    status_: Annotated[IncidentStatus | None, Query(alias="status")] = None,
    severity: Severity | None = None,
    service: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> IncidentPage:
    """Incidents, newest first, filtered by status, severity and service."""
    rows, total = list_incidents(
        session=session, status=status_, severity=severity, service=service, limit=limit, offset=offset
    )
    return IncidentPage(
        items=[IncidentPublic.model_validate(row, from_attributes=True) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{incident_id}", response_model=IncidentDetail)
def get_incident_route(incident_id: Int64Id, session: SessionDep, settings: SettingsDep) -> IncidentDetail:
    """One incident with its workflow status and steps."""
    incident = _found(session, incident_id)
    return _detail(session, incident, settings)


class AssigneeUpdate(BaseModel):
    user_id: int | None = Field(default=None, ge=1, le=INT32_MAX)
    team_id: int | None = Field(default=None, ge=1, le=INT32_MAX)


@router.put("/{incident_id}/assignee", response_model=IncidentDetail)
def assign_incident(
    request: Request,
    incident_id: Int64Id,
    body: AssigneeUpdate,
    principal: Responder,
    session: SessionDep,
    settings: SettingsDep,
) -> IncidentDetail:
    """Assign the incident to a user and/or a team (nulls unassign)."""
    incident = _found(session, incident_id)
    if body.user_id is not None and session.get(User, body.user_id) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"user_id: user {body.user_id} does not exist")
    if body.team_id is not None and session.get(Team, body.team_id) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"team_id: team {body.team_id} does not exist")
    before = {"assignee_user_id": incident.assignee_user_id, "assignee_team_id": incident.assignee_team_id}
    incident.assignee_user_id, incident.assignee_team_id = body.user_id, body.team_id
    incident.updated_at = utcnow()
    session.add(incident)
    record_audit(
        session,
        actor=actor_of(request, principal),
        action="incident.assign",
        target_type="incident",
        target_id=incident.id,
        before=before,
        after={"assignee_user_id": body.user_id, "assignee_team_id": body.team_id},
    )
    session.commit()
    session.refresh(incident)
    return _detail(session, incident, settings)


class StatusChange(BaseModel):
    status: IncidentStatus
    comment: str = Field(default="", max_length=2000)


@router.post("/{incident_id}/status", response_model=IncidentDetail)
def change_status(
    request: Request,
    incident_id: Int64Id,
    body: StatusChange,
    principal: Responder,
    session: SessionDep,
    settings: SettingsDep,
) -> IncidentDetail:
    """Move the incident along its lifecycle (open → in_progress → resolved → closed; resolved|closed →
    reopened); any other move is a 409 naming the allowed ones."""
    incident = _found(session, incident_id)
    allowed = INCIDENT_TRANSITIONS.get(incident.status, ())
    if body.status not in allowed:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"incident {incident_id} is {incident.status}: it can go to {', '.join(allowed) or 'nothing'}, "
            f"not {body.status}",
        )
    before = {"status": incident.status}
    now = utcnow()
    incident.status, incident.updated_at = body.status, now
    if body.status == "in_progress" and incident.acknowledged_at is None:
        incident.acknowledged_at = now
    elif body.status == "resolved":
        incident.resolved_at = now
    elif body.status == "closed":
        incident.closed_at = now
    elif body.status == "reopened":
        incident.resolved_at = incident.closed_at = None
    session.add(incident)
    record_audit(
        session,
        actor=actor_of(request, principal),
        action="incident.status",
        target_type="incident",
        target_id=incident.id,
        before=before,
        after={"status": body.status, "comment": body.comment},
    )
    session.commit()
    session.refresh(incident)
    return _detail(session, incident, settings)
