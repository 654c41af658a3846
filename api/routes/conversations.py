"""Conversations: find messages (filters, keywords, meaning), add an operator's message to an incident, and
read the exact context each agent attempt received."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session

from api.auth import Responder, actor_of, require
from api.deps import INT64_MAX, EngineDep, Int64Id, SettingsDep
from api.routes.workflows import StepId, WorkflowId, workflow_known
from core.embeddings import EmbeddingError, embedding_provider
from services.conversations import (
    MESSAGE_MAX,
    ConversationFilter,
    ConversationOrder,
    add_user_message,
    list_snapshots,
    message_public,
    search_messages,
    snapshot_public,
)
from services.incidents.detail import get_incident, in_session

router = APIRouter(tags=["conversations"], dependencies=[require("viewer")])


class MessageCreate(BaseModel):
    content: str = Field(min_length=1, max_length=MESSAGE_MAX)


@router.get("/api/conversations")
async def conversations(
    _request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    incident: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    exclude_incident: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    workflow: str | None = None,
    step: str | None = None,
    agent: str | None = None,
    service: str | None = None,
    role: Annotated[list[str] | None, Query()] = None,
    kind: str | None = None,
    since: str | None = None,
    until: str | None = None,
    q: str | None = None,
    semantic: str | None = None,
    order: ConversationOrder | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Messages, newest first; `q` finds keywords (ranked), `semantic` finds similar meaning — across every
    incident unless `incident` is given (`exclude_incident` leaves one out: "what happened last time")."""
    try:
        where = ConversationFilter.model_validate(
            {
                "incident": incident,
                "exclude_incident": exclude_incident,
                "workflow": workflow,
                "step": step,
                "agent": agent,
                "service": service,
                "role": role or [],
                "kind": kind or None,
                "since": since or None,
                "until": until or None,
                "q": q,
                "semantic": semantic,
            }
        )
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) from None
    order = order or ("relevance" if where.q or where.semantic else "newest")
    vector = None
    if where.semantic:
        try:
            provider = embedding_provider(settings)
            if provider is None:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, "semantic search is off (EMBEDDING_PROVIDER=off); use q= for keywords"
                )
            vector = (await asyncio.to_thread(provider.embed, [where.semantic]))[0]
        except EmbeddingError as err:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"embedding failed: {err}") from None

    def _search(session: Session) -> dict[str, Any]:
        items, next_cursor = search_messages(
            session=session, where=where, order=order, limit=limit, cursor=cursor, query_vector=vector
        )
        return {"items": items, "next_cursor": next_cursor, "order": order}

    return await in_session(engine, _search)


@router.post("/api/incidents/{incident_id}/messages", status_code=status.HTTP_201_CREATED)
async def post_message(
    request: Request,
    response: Response,
    incident_id: Int64Id,
    body: MessageCreate,
    principal: Responder,
    engine: EngineDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    """Add an operator's message (role `user`) to the incident's conversation: the next agent receives it.
    Safe to repeat with an `Idempotency-Key`."""
    if not body.content.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "content: must not be blank")
    actor = actor_of(request, principal)

    def _add(session: Session) -> dict[str, Any]:
        incident = get_incident(session=session, incident_id=incident_id)
        message, created = add_user_message(
            session=session, incident=incident, content=body.content, actor=actor, idempotency_key=idempotency_key
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return message_public(message)

    return await in_session(engine, _add)


@router.get("/api/workflows/{workflow_id}/steps/{step_id}/contexts")
async def step_contexts(workflow_id: WorkflowId, step_id: StepId, engine: EngineDep) -> list[dict[str, Any]]:
    """Every context the step's agent attempts received, oldest version first (without the context itself)."""

    def _list(session: Session) -> list[dict[str, Any]]:
        if not workflow_known(session, workflow_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"workflow {workflow_id} does not exist")
        rows = list_snapshots(session=session, workflow_id=workflow_id, step_id=step_id)
        return [snapshot_public(r, with_context=False) for r in rows]

    return await in_session(engine, _list)


@router.get("/api/workflows/{workflow_id}/steps/{step_id}/contexts/{version}")
async def step_context(
    workflow_id: WorkflowId, step_id: StepId, version: Annotated[int, Path(ge=1, le=1_000_000)], engine: EngineDep
) -> dict[str, Any]:
    """One immutable context snapshot, exactly as the agent received it."""

    def _one(session: Session) -> dict[str, Any]:
        for row in list_snapshots(session=session, workflow_id=workflow_id, step_id=step_id):
            if row.version == version:
                return snapshot_public(row, with_context=True)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"step {step_id} of workflow {workflow_id} has no context version {version}"
        )

    return await in_session(engine, _one)
