"""Conversation queries: filters, keyword search (Postgres full text, ranked), semantic search (pgvector HNSW),
operators' messages, and context snapshots."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, literal_column, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.audit import Actor
from core.conversations import (
    TEXT_SEARCH_CONFIG,
    ContextSnapshot,
    ConversationMessage,
    Role,
    announce_message,
)
from core.errors import INT64_MAX, CursorError
from core.redact import redact_text
from core.tables import Incident
from core.tokens import count_tokens

ConversationOrder = Literal["newest", "oldest", "relevance"]
MESSAGE_MAX = 20_000  # characters of one operator message
OFFSET_MAX = 1_000  # relevance pages: how deep one may page
# HNSW candidates per query (pgvector's default is 40). bench/conversations.py measures recall and latency for
# several values; this one holds recall@10 ≥ 0.95 at the sizes we measured. Filters use iterative scans.
EF_SEARCH = 100


class ConversationFilter(BaseModel):
    incident: int | None = Field(default=None, ge=1, le=INT64_MAX)
    exclude_incident: int | None = Field(default=None, ge=1, le=INT64_MAX)
    workflow: str | None = Field(default=None, max_length=200)
    step: str | None = Field(default=None, max_length=100)
    agent: str | None = Field(default=None, max_length=100)
    service: str | None = Field(default=None, max_length=100, description="the incidents' service")
    role: list[Role] = Field(default_factory=list)
    kind: Literal["message", "summary"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = Field(default=None, max_length=500, description="keywords (Postgres full-text search)")
    semantic: str | None = Field(default=None, max_length=2_000, description="text to find similar messages to")

    @field_validator("workflow", "step", "agent", "service", "q", "semantic", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-01T10:00:00Z")
        return value


def message_public(row: ConversationMessage, **extra: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "incident_id": row.incident_id,
        "workflow_id": row.workflow_id,
        "step_id": row.step_id,
        "agent": row.agent,
        "role": row.role,
        "kind": row.kind,
        "content": row.content,
        "metadata": row.meta,
        "covers": row.covers,
        "embedded": row.embedding_model is not None,
        "created_at": row.created_at.isoformat(),
        **extra,
    }


def _conditions(where: ConversationFilter) -> list[Any]:
    m = ConversationMessage
    found: list[Any] = []
    if where.incident is not None:
        found.append(m.incident_id == where.incident)
    if where.exclude_incident is not None:
        found.append(m.incident_id != where.exclude_incident)
    if where.workflow:
        found.append(m.workflow_id == where.workflow)
    if where.step:
        found.append(m.step_id == where.step)
    if where.agent:
        found.append(m.agent == where.agent)
    if where.service:  # incidents.service is indexed: the ids of that service's incidents, then their messages
        found.append(col(m.incident_id).in_(select(Incident.id).where(Incident.service == where.service)))
    if where.role:
        found.append(col(m.role).in_(where.role))
    if where.kind:
        found.append(m.kind == where.kind)
    if where.since is not None:
        found.append(col(m.created_at) >= where.since)
    if where.until is not None:
        found.append(col(m.created_at) < where.until)
    return found


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, limit_value: int) -> int:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != 1:
            raise ValueError
        value = values[0]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        if not 0 <= value <= limit_value:
            raise ValueError
        return value
    except (ValueError, TypeError, IndexError):
        raise CursorError("cursor: not a cursor from this list (use next_cursor as given)") from None


def search_messages(
    *,
    session: Session,
    where: ConversationFilter,
    order: ConversationOrder,
    limit: int,
    cursor: str | None,
    query_vector: list[float] | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of messages and the cursor of the next; relevance is ts_rank for `q`, cosine for `semantic`."""
    m = ConversationMessage
    conditions = _conditions(where)
    config: Any = literal_column(f"'{TEXT_SEARCH_CONFIG}'::regconfig")  # the same as the `search` column's
    tsquery = func.websearch_to_tsquery(config, where.q) if where.q else None
    if tsquery is not None:
        conditions.append(col(m.search).op("@@")(tsquery))
    if not (order == "relevance" and (tsquery is not None or query_vector is not None)):
        after = _decode_cursor(cursor, INT64_MAX) if cursor else None
        newest = order != "oldest"
        if after is not None:
            conditions.append(col(m.id) < after if newest else col(m.id) > after)
        ordered = select(m).where(*conditions).order_by(col(m.id).desc() if newest else col(m.id))
        rows = list(session.exec(ordered.limit(limit + 1)))
        page = [message_public(r) for r in rows[:limit]]
        return page, encode_cursor(page[-1]["id"]) if len(rows) > limit and page else None
    offset = _decode_cursor(cursor, OFFSET_MAX) if cursor else 0
    if query_vector is not None:  # semantic: nearest first (HNSW); with q, among the keyword matches
        embedding: Any = col(m.embedding)  # pgvector's comparator
        score = embedding.cosine_distance(query_vector).label("distance")
        conditions.append(col(m.embedding).is_not(None))
        session.exec(text(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}"))  # type: ignore[call-overload]
        session.exec(text("SET LOCAL hnsw.iterative_scan = strict_order"))  # type: ignore[call-overload]
        ranked = select(m, score).where(*conditions).order_by(score, col(m.id))
    else:
        score = func.ts_rank_cd(col(m.search), tsquery).label("rank")
        ranked = select(m, score).where(*conditions).order_by(score.desc(), col(m.id).desc())
    hits = list(session.exec(ranked.offset(offset).limit(limit + 1)))
    page = []
    for row, value in hits[:limit]:
        extra = {"similarity": round(1 - float(value), 4)} if query_vector is not None else {"rank": float(value)}
        page.append(message_public(row, **extra))
    more = len(hits) > limit and offset + limit <= OFFSET_MAX
    return page, encode_cursor(offset + limit) if more else None


def add_user_message(
    *, session: Session, incident: Incident, content: str, actor: Actor, idempotency_key: str | None
) -> tuple[ConversationMessage, bool]:
    """Append an operator's message (role user) to the incident's conversation; the next agent sees it.
    (message, created): a repeat with the same Idempotency-Key returns the first message."""
    assert incident.id is not None
    key = f"user:{incident.id}:{idempotency_key}" if idempotency_key else None
    if key is not None:
        found = session.exec(select(ConversationMessage).where(ConversationMessage.dedupe_key == key)).first()
        if found is not None:
            return found, False
    content = redact_text(content)
    message = ConversationMessage(
        incident_id=incident.id,
        workflow_id=incident.workflow_id,
        role="user",
        content=content,
        meta={"author": actor.name, "author_user_id": actor.user_id, "tokens": count_tokens(content)},
        dedupe_key=key,
    )
    session.add(message)
    try:
        session.flush()
    except IntegrityError:  # the same key, at the same moment: the other request stored it
        session.rollback()
        if key is None:
            raise
        return session.exec(select(ConversationMessage).where(ConversationMessage.dedupe_key == key)).one(), False
    announce_message(session, message, actor=actor.name)
    session.commit()
    session.refresh(message)
    return message, True


def recent_messages(*, session: Session, incident_id: int, limit: int) -> list[ConversationMessage]:
    """The incident's newest messages, oldest first (the conversation on its page)."""
    m = ConversationMessage
    newest = session.exec(select(m).where(m.incident_id == incident_id).order_by(col(m.id).desc()).limit(limit))
    return list(reversed(list(newest)))


def list_snapshots(*, session: Session, workflow_id: str, step_id: str) -> list[ContextSnapshot]:
    query = (
        select(ContextSnapshot)
        .where(ContextSnapshot.workflow_id == workflow_id, ContextSnapshot.step_id == step_id)
        .order_by(col(ContextSnapshot.version))
    )
    return list(session.exec(query))


def snapshot_public(row: ContextSnapshot, *, with_context: bool) -> dict[str, Any]:
    shown = row.model_dump(mode="json", exclude={"context", "activity_key"})
    if with_context:
        shown["context"] = row.context
    return shown


def messages_after(*, session: Session, incident_id: int, after_id: int, limit: int) -> list[ConversationMessage]:
    """The incident's messages newer than `after_id`, oldest first (what a live chat view appends)."""
    m = ConversationMessage
    query = select(m).where(m.incident_id == incident_id, col(m.id) > after_id).order_by(col(m.id)).limit(limit)
    return list(session.exec(query))


def messages_around(
    *, session: Session, incident_id: int, message_id: int, each_side: int
) -> list[ConversationMessage]:
    """The incident's messages around one of its messages (a link to an older message), oldest first."""
    m = ConversationMessage
    before = select(m).where(m.incident_id == incident_id, col(m.id) <= message_id)
    after = select(m).where(m.incident_id == incident_id, col(m.id) > message_id)
    older = list(session.exec(before.order_by(col(m.id).desc()).limit(each_side + 1)))
    newer = list(session.exec(after.order_by(col(m.id)).limit(each_side)))
    return [*reversed(older), *newer]


def latest_message_id(*, session: Session, incident_id: int) -> int:
    """The id of the incident's newest message (0: none yet)."""
    m = ConversationMessage
    found = session.exec(select(func.max(m.id)).where(m.incident_id == incident_id)).one()
    return int(found or 0)


def conversation_facets(*, session: Session, incident_id: int) -> tuple[list[str], list[str]]:
    """The agents and the steps that wrote to the incident's conversation (the chat view's filter choices)."""
    m = ConversationMessage
    pairs = session.exec(select(m.agent, m.step_id).where(m.incident_id == incident_id).distinct().limit(1_000)).all()
    agents = sorted({a for a, _ in pairs if a})
    steps = sorted({s for _, s in pairs if s})
    return agents, steps


def incidents_by_id(*, session: Session, ids: list[int]) -> dict[int, Incident]:
    """The incidents with these ids (search results name the incident each message belongs to)."""
    if not ids:
        return {}
    rows = session.exec(select(Incident).where(col(Incident.id).in_(sorted(set(ids)))))
    return {row.id: row for row in rows if row.id is not None}
