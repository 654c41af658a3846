"""Live events over Server-Sent Events, fed by Postgres LISTEN/NOTIFY — no polling.

Each web process holds one LISTEN connection (started with the first subscriber) and fans events out to
its SSE clients. Writers NOTIFY only the `events` row id (activities/projection.py); the hub reads the
rows once per notification burst. A reconnecting browser sends Last-Event-ID and first gets what it
missed from the `events` table.
Streams end with their credentials: every SSE_RECHECK_SECONDS one query tells the hub which of its streams'
tokens and sessions still hold (whichever process revoked them); it ends the others' streams. One user and
one token hold at most SSE_MAX_PER_USER and SSE_MAX_PER_TOKEN of a process's SSE_MAX_CLIENTS streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from api.auth import current_principal
from api.deps import INT64_MAX
from api.event_hub import (
    CATCH_UP_LIMIT,
    QUEUE_SIZE,
    RECONNECT_MS,
    Client,
    EventHub,
    Frame,
    ListenUnavailable,
    OverUserLimit,
    TooManyClients,
    encode_event,
)
from core.tables import Event

log = logging.getLogger(__name__)

__all__ = ["STREAM_OPENAPI", "EventHub", "Frame", "LiveStream", "QUEUE_SIZE", "encode_event", "hub_of"]


def hub_of(request: Request) -> EventHub:
    hub = getattr(request.app.state, "event_hub", None)
    if hub is None:
        hub = request.app.state.event_hub = EventHub(request.app.state.engine, request.app.state.settings)
    return hub


def _missed(engine: Engine, after: int | None, since: datetime | None, incident_id: int | None) -> list[Event]:
    with Session(engine) as session:
        query = select(Event).where(col(Event.id) > after) if after is not None else select(Event)
        if since is not None:
            query = query.where(col(Event.at) >= since)
        if incident_id is not None:
            query = query.where(Event.incident_id == incident_id)
        return list(session.exec(query.order_by(col(Event.id)).limit(CATCH_UP_LIMIT)))


def _bad_request(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{field}: {message}", "errors": [{"field": field, "message": message}]}, status_code=422
    )


def _id_param(raw: str | None, field: str, low: int) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not low <= int(raw) <= INT64_MAX:
        raise ValueError(field)
    return int(raw)


class LiveStream:
    """GET /api/events/stream[?incident_id=N]: events as they happen; resumes after Last-Event-ID (or
    ?last_event_id=), or first replays events from ?since= (an ISO time: a page rendered just before).

    A plain ASGI endpoint rather than a FastAPI route, because a stream lives for hours and thousands of them
    are open at once: it keeps no dependency stack for the stream's lifetime, and its sse-starlette response
    runs no per-client ping, send-timeout or shutdown tasks; the hub's bytes go out as they are."""

    __am_guard__ = "viewer"  # checked by tests/api/test_route_guards.py like require("viewer")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901 (the stream's admission checks and its loop)
        request = Request(scope, receive)
        principal = await current_principal(request)
        if principal is None:
            detail = "not authenticated: log in, or send an API token as 'Authorization: Bearer <token>'"
            await JSONResponse({"detail": detail}, 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        try:
            incident_id = _id_param(request.query_params.get("incident_id"), "incident_id", 1)
            header = request.headers.get("last-event-id")
            after = (
                int(header)
                if header and header.isdigit() and len(header) <= 19
                else _id_param(request.query_params.get("last_event_id"), "last_event_id", 0)
            )
        except ValueError as err:
            refused = _bad_request(f"query.{err}", f"must be a whole number from 1 to {INT64_MAX}")
            await refused(scope, receive, send)
            return
        since = None
        if after is None and request.query_params.get("since"):
            try:
                since = datetime.fromisoformat(request.query_params["since"])
            except ValueError:
                await _bad_request("query.since", "must be an ISO 8601 date and time")(scope, receive, send)
                return
            if since.tzinfo is None:
                await _bad_request("query.since", "must include a UTC offset")(scope, receive, send)
                return
        hub = hub_of(request)
        try:
            client = await hub.subscribe(principal)
        except OverUserLimit as err:
            await JSONResponse({"detail": str(err)}, 429, {"Retry-After": "5"})(scope, receive, send)
            return
        except (TooManyClients, ListenUnavailable) as err:
            await JSONResponse({"detail": str(err)}, 503, {"Retry-After": "5"})(scope, receive, send)
            return
        engine = request.app.state.engine

        async def frames() -> AsyncIterator[bytes]:
            try:
                # Browsers reconnect after `retry` ms (with Last-Event-ID) when the stream drops, e.g. a deploy.
                yield f": connected\r\nretry: {RECONNECT_MS}\r\n\r\n".encode()
                # The hub's frames wait in the mailbox while the catch-up is read: those it sent are not sent
                # twice. By id, not "up to the last id": an event committed after a newer one comes later.
                replayed: set[int] = set()
                if after is not None or since is not None:
                    for missed in await run_in_threadpool(_missed, engine, after, since, incident_id):
                        replayed.add(missed.id or 0)
                        yield encode_event(missed).data
                while True:
                    for frame in await client.take():
                        if frame is None:
                            return
                        if frame.id and (
                            frame.id in replayed or (incident_id is not None and frame.incident_id != incident_id)
                        ):
                            continue
                        yield frame.data  # the hub's bytes, as they are (pings included)
            finally:
                hub.unsubscribe(client)

        response = HubEventSourceResponse(client, frames(), ping=0, send_timeout=None, headers=STREAM_HEADERS)
        try:
            await response(scope, receive, send)
        except asyncio.CancelledError:
            pass  # dropped by the hub as too slow, or the server is stopping: the browser reconnects
        finally:
            hub.unsubscribe(client)


class HubEventSourceResponse(EventSourceResponse):
    """sse-starlette's response, run with one helper task per connection instead of a task group of three.

    The stream runs in the request's own task; a small task waits for the client's disconnect and then drops
    the client. Pings and shutdown are the hub's, once per process: the per-connection ping, send-timeout and
    shutdown-watch tasks of EventSourceResponse.__call__ cost ~25 KiB per idle client (bench/sse.py)."""

    def __init__(self, client: Client, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await super().__call__(scope, receive, send)  # headers only, no stream (sse-starlette's own answer)
            return
        streaming = True

        def disconnected(watch: asyncio.Task[None]) -> None:
            if streaming and not watch.cancelled():
                self.client.drop()  # the browser left (or receive failed): end the stream now, not at next ping

        watcher = asyncio.create_task(self._listen_for_disconnect(receive))
        watcher.add_done_callback(disconnected)
        try:
            await self._stream_response(send)
        finally:
            streaming = False
            watcher.cancel()


STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy buffering (nginx)


STREAM_OPENAPI = {
    "get": {
        "tags": ["events"],
        "summary": "Live events (Server-Sent Events)",
        "description": (LiveStream.__doc__ or "").strip(),
        "operationId": "live_events_stream",
        "parameters": [
            {"name": "incident_id", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}},
            {"name": "last_event_id", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0, "maximum": INT64_MAX}},
            {"name": "since", "in": "query", "required": False,
             "schema": {"type": "string", "format": "date-time"}},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 20}},
        ],
        "responses": {
            "200": {"description": "a never-ending event stream", "content": {"text/event-stream": {}}},
            "401": {"description": "not logged in"},
            "422": {"description": "a parameter is not a valid id"},
            "429": {"description": "this user or API token holds its most live connections on this process"},
            "503": {"description": "too many live connections on this process, or no LISTEN connection"},
        },
    }
}  # fmt: skip
