"""Comments, attachments and links of one incident (JSON API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlmodel import Session
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from api.auth import Responder, actor_of, require
from api.deps import INT64_MAX, EngineDep, Int64Id, SessionDep, SettingsDep
from api.errors import MULTIPART_OVERHEAD
from core.collaboration import IncidentAttachment, IncidentComment, IncidentLink, LinkKind
from core.markdown import render_markdown
from core.tables import Incident
from services.attachments import (
    INLINE_TYPES,
    AttachmentRejected,
    attachment_path,
    list_attachments,
    store_attachment,
)
from services.collaboration import add_comment, add_link, list_comments, remove_link
from services.incidents.detail import detail_for, get_incident, in_read_session, in_session
from services.schemas import AttachmentPublic, CommentCreate, CommentPublic, IncidentDetail

router = APIRouter(prefix="/api/incidents", tags=["incidents"], dependencies=[require("viewer")])
# Downloads are never run as a page of ours: no scripts, no plugins, a unique origin.
DOWNLOAD_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def comment_public(comment: IncidentComment) -> CommentPublic:
    return CommentPublic(
        **comment.model_dump(exclude={"body"}), body=comment.body, body_html=render_markdown(comment.body)
    )


def attachment_public(attachment: IncidentAttachment) -> AttachmentPublic:
    return AttachmentPublic(
        **attachment.model_dump(),
        download_url=f"/api/incidents/{attachment.incident_id}/attachments/{attachment.id}",
    )


@router.get("/{incident_id}/comments", response_model=list[CommentPublic])
async def comments(
    incident_id: Int64Id,
    engine: EngineDep,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[CommentPublic]:
    """Comments, oldest first; page on with `after_id` (the last id you have)."""

    def _list(session: Session) -> list[CommentPublic]:
        get_incident(session=session, incident_id=incident_id)
        found = list_comments(session=session, incident_id=incident_id, after_id=after_id, limit=limit)
        return [comment_public(c) for c in found]

    return await in_read_session(engine, _list)


@router.post("/{incident_id}/comments", response_model=CommentPublic, status_code=status.HTTP_201_CREATED)
async def post_comment(
    request: Request, incident_id: Int64Id, body: CommentCreate, principal: Responder, engine: EngineDep
) -> CommentPublic:
    """Add a markdown comment; it is on the timeline and streamed live."""
    actor = actor_of(request, principal)

    def _add(session: Session) -> CommentPublic:
        incident = get_incident(session=session, incident_id=incident_id)
        # Answered from what was written, before in_session commits it: no read back after the commit.
        return comment_public(add_comment(session=session, incident=incident, body=body.body, actor=actor))

    return await in_session(engine, _add)


class LinkCreate(BaseModel):
    kind: LinkKind
    related_incident_id: int = Field(ge=1, le=INT64_MAX)


@router.post("/{incident_id}/links", response_model=IncidentDetail, status_code=status.HTTP_201_CREATED)
async def link_incident(
    request: Request,
    incident_id: Int64Id,
    body: LinkCreate,
    principal: Responder,
    engine: EngineDep,
    settings: SettingsDep,
) -> IncidentDetail:
    """Link this incident to another: `duplicate_of`, `caused_by` or `related`. Both incidents show it."""
    actor = actor_of(request, principal)

    def _link(session: Session) -> IncidentDetail:
        incident = get_incident(session=session, incident_id=incident_id)
        related = session.get(Incident, body.related_incident_id)
        if related is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"related_incident_id: incident {body.related_incident_id} does not exist",
            )
        try:
            add_link(session=session, incident=incident, related=related, kind=body.kind, actor=actor)
        except ValueError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
        session.refresh(incident)
        return detail_for(session=session, incident=incident, settings=settings)

    return await in_session(engine, _link)


@router.delete("/{incident_id}/links/{link_id}", status_code=status.HTTP_204_NO_CONTENT)
async def unlink_incident(
    request: Request, incident_id: Int64Id, link_id: Int64Id, principal: Responder, engine: EngineDep
) -> None:
    """Remove a link (from either of its incidents)."""
    actor = actor_of(request, principal)

    def _unlink(session: Session) -> None:
        link = session.get(IncidentLink, link_id)
        if link is None or incident_id not in (link.incident_id, link.related_incident_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident {incident_id} has no link {link_id}")
        remove_link(session=session, link=link, actor=actor)

    await in_session(engine, _unlink)


@router.get("/{incident_id}/attachments", response_model=list[AttachmentPublic])
async def attachments(incident_id: Int64Id, engine: EngineDep) -> list[AttachmentPublic]:
    """The incident's attachments, oldest first."""

    def _list(session: Session) -> list[AttachmentPublic]:
        get_incident(session=session, incident_id=incident_id)
        return [attachment_public(a) for a in list_attachments(session=session, incident_id=incident_id)]

    return await in_session(engine, _list)


# The multipart body is read by the route itself, after the caller is known to be a responder and the
# incident to exist, and counted while it streams in: no declared length (chunked) buys an unlimited spool.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


async def read_upload(request: Request, max_bytes: int) -> tuple[FormData, UploadFile]:
    """The request's form and its `file` part; AttachmentRejected(413) as soon as the body passes the limit."""
    limit, received = max_bytes + MULTIPART_OVERHEAD, 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise AttachmentRejected(status.HTTP_413_CONTENT_TOO_LARGE, f"attachment larger than {max_bytes} bytes")
        return message

    form = await Request(request.scope, receive).form(max_files=1, max_fields=10)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "file: Field required (a multipart file part)")
    return form, upload


@router.post(
    "/{incident_id}/attachments",
    response_model=AttachmentPublic,
    status_code=status.HTTP_201_CREATED,
    responses={413: {"description": "larger than ATTACHMENT_MAX_BYTES"}, 415: {"description": "type not accepted"}},
    openapi_extra=UPLOAD_BODY,
)
async def upload_attachment(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    engine: EngineDep,
    settings: SettingsDep,
) -> AttachmentPublic:
    """Attach a file (multipart field `file`): text, CSV, JSON, logs, PNG/JPEG/GIF/WebP, PDF, zip, gzip."""
    actor = actor_of(request, principal)
    await in_session(engine, lambda session: get_incident(session=session, incident_id=incident_id).id)
    form, file = await read_upload(request, settings.attachment_max_bytes)

    def _store(session: Session) -> AttachmentPublic:
        stored = store_attachment(
            session=session,
            root=settings.effective_attachments_dir,
            incident=get_incident(session=session, incident_id=incident_id),
            source=file.file,
            filename=file.filename,
            declared_type=file.content_type,
            max_bytes=settings.attachment_max_bytes,
            actor=actor,
        )
        return attachment_public(stored)

    try:
        return await in_session(engine, _store)
    finally:
        await form.close()


@router.get("/{incident_id}/attachments/{attachment_id}", response_class=FileResponse)
def download_attachment(
    incident_id: Int64Id, attachment_id: Int64Id, session: SessionDep, settings: SettingsDep
) -> FileResponse:
    """The file, as an attachment (images and plain text inline), never interpreted as one of our pages."""
    attachment = session.get(IncidentAttachment, attachment_id)
    if attachment is None or attachment.incident_id != incident_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident {incident_id} has no attachment {attachment_id}")
    path = attachment_path(settings.effective_attachments_dir, attachment)
    if not path.is_file():
        raise HTTPException(status.HTTP_410_GONE, f"attachment {attachment_id}'s file is missing from storage")
    media_type = attachment.content_type + ("; charset=utf-8" if attachment.content_type.startswith("text/") else "")
    return FileResponse(
        path,
        media_type=media_type,
        filename=attachment.filename,
        content_disposition_type="inline" if attachment.content_type in INLINE_TYPES else "attachment",
        headers={"Content-Security-Policy": DOWNLOAD_CSP, "Cache-Control": "private, no-store"},
    )
