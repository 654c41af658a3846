"""Conversation pages: an incident's chat filtered or searched (the incident page's filter form lands here without
JavaScript; htmx swaps the same partial in place), the messages a live chat appends, and the search across every
incident's conversation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session

from api.auth import require
from api.deps import INT64_MAX, Int64Id, SessionDep, SettingsDep
from core.embeddings import EmbeddingError, embedding_provider
from core.settings import Settings
from services.conversations import (
    ConversationFilter,
    ConversationOrder,
    conversation_facets,
    incidents_by_id,
    latest_message_id,
    messages_after,
    messages_around,
    recent_messages,
    search_messages,
)
from services.incidents.detail import get_incident
from web.chat_view import ChatView, chat_message, chat_view, group_messages
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
# The incident page's chat partial (incidents/_conversation.html) groups the messages it is given with this.
templates.env.globals["chat_view"] = chat_view

CHAT_SHOWN = 200  # messages of one chat view (as the incident page shows)
SEMANTIC_SHOWN = 20  # the most similar messages a semantic filter shows
AROUND = 100  # messages each side of a linked message that is older than the page shows
APPEND_MAX = 200  # messages one append brings; chat.js asks again while there are more
SEARCH_PAGE = 20
SEMANTIC_OFF = "Semantic search is off on this server (EMBEDDING_PROVIDER=off): search by keywords instead."


class ChatQuery(BaseModel):
    """The chat filter form as sent (all text: the form's empty fields are unset)."""

    agent: str = Field(default="", max_length=100)
    step: str = Field(default="", max_length=100)
    service: str = Field(default="", max_length=100)
    since: str = Field(default="", max_length=40)
    until: str = Field(default="", max_length=40)
    q: str = Field(default="", max_length=500)
    semantic: str = Field(default="", max_length=2_000)
    around: int | None = Field(default=None, ge=1, le=INT64_MAX)

    def shown(self) -> list[tuple[str, str]]:
        """The active filter, as the page says it."""
        names = {
            "agent": "agent",
            "step": "step",
            "service": "service",
            "since": "from",
            "until": "until",
            "q": "keywords",
            "semantic": "meaning",
        }
        found = [(label, str(getattr(self, name)).strip()) for name, label in names.items()]
        around = [("around message", str(self.around))] if self.around else []
        return [(label, value) for label, value in found if value] + around

    def filtered(self) -> bool:
        return bool(self.shown())


def _time(value: str, name: str) -> datetime | None:
    """A form time: ISO 8601; without a zone (the browser's datetime-local field) it is UTC, as the page shows."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{name}: not a time (use 2026-12-01T10:00, UTC)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def conversation_filter(query: ChatQuery, incident_id: int | None) -> ConversationFilter:
    """The service's filter of a form; ValueError says what is wrong with a field."""
    try:
        return ConversationFilter(
            incident=incident_id,
            agent=query.agent,
            step=query.step,
            service=query.service,
            since=_time(query.since, "from"),
            until=_time(query.until, "until"),
            q=query.q,
            semantic=query.semantic,
        )
    except ValidationError as err:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())) from None


def query_vector(settings: Settings, text: str) -> list[float]:
    """The embedding of a semantic query; ValueError with what the page tells the reader when it cannot be had."""
    try:
        provider = embedding_provider(settings)
        if provider is None:
            raise ValueError(SEMANTIC_OFF)
        return provider.embed([text])[0]
    except EmbeddingError as err:
        raise ValueError(f"Semantic search failed: {err}") from None


@dataclass
class Filtered:
    view: ChatView
    note: str | None = None  # how the results were chosen, when it matters
    problem: str | None = None


def _filtered_chat(session: Session, settings: Settings, incident_id: int, query: ChatQuery) -> Filtered:
    agents, steps = conversation_facets(session=session, incident_id=incident_id)
    newest = latest_message_id(session=session, incident_id=incident_id)

    def view(messages: list[Any], note: str | None = None, problem: str | None = None) -> Filtered:
        shown = chat_view(messages, last_id=newest)
        shown.agents, shown.steps = agents, steps
        return Filtered(shown, note, problem)

    if not query.filtered():
        return view(recent_messages(session=session, incident_id=incident_id, limit=CHAT_SHOWN))
    if query.around is not None:
        return view(
            messages_around(session=session, incident_id=incident_id, message_id=query.around, each_side=AROUND)
        )
    try:
        where = conversation_filter(query, incident_id)
        vector = query_vector(settings, where.semantic) if where.semantic else None
    except ValueError as err:
        return view([], problem=str(err))
    relevance = where.q is not None or vector is not None
    limit = SEMANTIC_SHOWN if vector is not None else CHAT_SHOWN
    found, more = search_messages(
        session=session,
        where=where,
        order="relevance" if relevance else "newest",
        limit=limit,
        cursor=None,
        query_vector=vector,
    )
    found.sort(key=lambda m: m["id"])  # a chat reads oldest first, whatever chose the messages
    note = None
    if vector is not None:
        note = f"The {len(found)} messages closest in meaning, in conversation order (similarity shown)."
    elif more:
        note = f"The {limit} {'best' if relevance else 'newest'} matches; narrow the filter to see others."
    return view(found, note)


def _chat_context(incident: Any, filtered: Filtered, query: ChatQuery) -> dict[str, Any]:
    return {
        "incident": incident,
        "chat": filtered.view,
        "chat_query": query,
        "chat_note": filtered.note,
        "chat_problem": filtered.problem,
    }


@router.get("/incidents/{incident_id}/conversation", response_class=HTMLResponse)
def incident_conversation(
    request: Request,
    incident_id: Int64Id,
    query: Annotated[ChatQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """The incident's chat, filtered: in place of the incident page's chat (htmx), or as a page of its own."""
    incident = get_incident(session=session, incident_id=incident_id)  # NotFound: 404
    context = _chat_context(incident, _filtered_chat(session, settings, incident_id, query), query)
    partial = request.headers.get("HX-Request") == "true"
    template = "incidents/_conversation.html" if partial else "conversations/incident.html"
    return templates.TemplateResponse(request, template, context)


@router.get("/incidents/{incident_id}/conversation/after", response_class=HTMLResponse)
def conversation_after(
    request: Request,
    incident_id: Int64Id,
    session: SessionDep,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> HTMLResponse:
    """The messages after `after_id` as chat groups, for chat.js to append (or count, while a filter is on)."""
    get_incident(session=session, incident_id=incident_id)
    rows = messages_after(session=session, incident_id=incident_id, after_id=after_id, limit=APPEND_MAX + 1)
    more = len(rows) > APPEND_MAX
    shown = [chat_message(r) for r in rows[:APPEND_MAX]]
    context = {
        "groups": group_messages(shown),
        "last_id": shown[-1].id if shown else after_id,
        "more": more,
    }
    return templates.TemplateResponse(request, "conversations/_append.html", context)


@router.get("/conversations", response_class=HTMLResponse)
def conversation_search_page(
    request: Request,
    query: Annotated[ChatQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """Every incident's conversation: keywords and meaning, by agent, service and time; a page at a time."""
    context: dict[str, Any] = {"query": query, "results": [], "next_url": None, "problem": None, "order": "newest"}
    try:
        where = conversation_filter(query, None)
        vector = query_vector(settings, where.semantic) if where.semantic else None
    except ValueError as err:
        context["problem"] = str(err)
        return templates.TemplateResponse(request, "conversations/search.html", context)
    order: ConversationOrder = "relevance" if where.q is not None or vector is not None else "newest"
    found, next_cursor = search_messages(
        session=session, where=where, order=order, limit=SEARCH_PAGE, cursor=cursor, query_vector=vector
    )
    incidents = incidents_by_id(session=session, ids=[m["incident_id"] for m in found])
    context["order"] = order
    context["results"] = [(chat_message(m), incidents.get(m["incident_id"]), m["incident_id"]) for m in found]
    if next_cursor:
        params = [(k, v) for k, v in query.model_dump(exclude={"around"}).items() if v]
        context["next_url"] = "/conversations?" + urlencode([*params, ("cursor", next_cursor)])
    return templates.TemplateResponse(request, "conversations/search.html", context)
