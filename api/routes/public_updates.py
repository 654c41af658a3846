"""An incident's public updates (JSON API): what responders tell the public; the public status page (/status)
shows them for incidents of services listed there (services/status_page.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from sqlmodel import Session

from api.auth import Responder, actor_of, require
from api.deps import EngineDep, Int64Id
from core.tables import IncidentPublicUpdate, PublicUpdateCreate
from services.incidents.detail import in_session
from services.status_page import delete_public_update, list_public_updates, post_public_update

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[require("viewer")])


class PublicUpdatePublic(BaseModel):
    id: int
    incident_id: int
    status: str
    body: str
    author: str
    created_at: datetime


def _public(update: IncidentPublicUpdate) -> PublicUpdatePublic:
    return PublicUpdatePublic.model_validate(update.model_dump())


@router.get("/{incident_id}/public-updates", response_model=list[PublicUpdatePublic])
async def public_updates(incident_id: Int64Id, engine: EngineDep) -> list[PublicUpdatePublic]:
    """The incident's public updates, newest first (as the status page shows them)."""

    def _list(session: Session) -> list[PublicUpdatePublic]:
        return [_public(u) for u in list_public_updates(session=session, incident_id=incident_id)]

    return await in_session(engine, _list)


@router.post("/{incident_id}/public-updates", response_model=PublicUpdatePublic, status_code=status.HTTP_201_CREATED)
async def post_public(
    request: Request, incident_id: Int64Id, body: PublicUpdateCreate, principal: Responder, engine: EngineDep
) -> PublicUpdatePublic:
    """Post an update to the public status page (plain text, shown as written). 422 when the incident's service is
    not listed there."""
    actor = actor_of(request, principal)

    def _post(session: Session) -> PublicUpdatePublic:
        return _public(post_public_update(session=session, incident_id=incident_id, data=body, actor=actor))

    return await in_session(engine, _post)


@router.delete("/{incident_id}/public-updates/{update_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_public(
    request: Request, incident_id: Int64Id, update_id: Int64Id, principal: Responder, engine: EngineDep
) -> Response:
    """Take an update off the status page (audited)."""
    actor = actor_of(request, principal)

    def _delete(session: Session) -> None:
        delete_public_update(session=session, incident_id=incident_id, update_id=update_id, actor=actor)

    await in_session(engine, _delete)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
