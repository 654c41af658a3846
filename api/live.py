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
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import current_principal
from api.deps import INT64_MAX
from api.errors import dependency_down, domain_error_json
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
from api.security import HEADERS as SECURITY_HEADERS
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
        try:
            principal = await current_principal(request)
        except Exception as exc:  # served ahead of the app's error handlers (StreamFirst): answer as they would
            down = dependency_down(exc)
            if down is None:
                raise
            await domain_error_json(down)(scope, receive, send)
            return
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

        async def first_frames() -> list[bytes]:
            # Browsers reconnect after `retry` ms (with Last-Event-ID) when the stream drops, e.g. a deploy.
            out = [f": connected\r\nretry: {RECONNECT_MS}\r\n\r\n".encode()]
            if after is not None or since is not None:
                for missed in await run_in_threadpool(_missed, engine, after, since, incident_id):
                    replayed.add(missed.id or 0)
                    out.append(encode_event(missed).data)
            return out

        # The hub's frames wait in the mailbox while the catch-up is read: those it sent are not sent twice. By id,
        # not "up to the last id": an event committed after a newer one comes later.
        replayed: set[int] = set()

        def wanted(frame: Frame) -> bool:
            return not frame.id or (
                frame.id not in replayed and (incident_id is None or frame.incident_id == incident_id)
            )

        response = HubEventSourceResponse(client, first_frames, wanted, headers=STREAM_HEADERS)
        try:
            await response(scope, receive, send)
        except asyncio.CancelledError:
            pass  # dropped by the hub as too slow, or the server is stopping: the browser reconnects
        finally:
            hub.unsubscribe(client)


class HubEventSourceResponse(EventSourceResponse):
    """sse-starlette's response (its headers, its answer to HEAD), streaming the hub's frames itself.

    The stream runs in the request's own task; a small task waits for the client's disconnect and then drops the
    client. Pings and shutdown are the hub's, once per process: the per-connection ping, send-timeout and
    shutdown-watch tasks of EventSourceResponse.__call__ cost ~25 KiB per idle client (bench/sse.py). Each wake
    sends what the mailbox holds as one chunk, the hub's bytes as they are: with 500 clients an event is 500
    wakes, and the last client's wait is the sum of the others' (bench/sse.py, p99), so each is kept to a send."""

    def __init__(
        self,
        client: Client,
        first: Callable[[], Awaitable[list[bytes]]],
        wanted: Callable[[Frame], bool],
        **kwargs: Any,
    ) -> None:
        super().__init__(_no_body(), ping=0, send_timeout=None, **kwargs)
        self.client = client
        self.first = first
        self.wanted = wanted

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
            await self._pump(send)
        finally:
            streaming = False
            watcher.cancel()

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._response_started = True
        await send({"type": "http.response.body", "body": b"".join(await self.first()), "more_body": True})
        take, wanted = self.client.take, self.wanted
        while True:
            frames = await take()
            chunk = b"".join([f.data for f in frames if f is not None and wanted(f)])
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if None in frames:  # the hub ends the stream (shutdown, credentials ended): after what came before
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _no_body() -> AsyncIterator[bytes]:
    """sse-starlette wants a body iterator; HubEventSourceResponse streams the hub's frames instead."""
    return
    yield b""


# The security headers every response gets (api/security.py: the stream is served ahead of that middleware, see
# StreamFirst), no caching, and no proxy buffering (nginx).
STREAM_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
STREAM_PATH = "/api/events/stream"


class StreamFirst:
    """The app's outermost layer: GET /api/events/stream goes straight to its endpoint; everything else through the
    middleware stack. Thousands of streams stay open for hours, and each layer in between (server errors,
    security headers, body limit, exceptions, the router) held a coroutine frame per stream and ran on every
    event sent to every client. What they do for a stream is done by the endpoint itself: it answers its own
    refusals (401, 422, 429, 503), reads no body, and sends the security headers (STREAM_HEADERS)."""

    def __init__(self, app: ASGIApp, stream: LiveStream) -> None:
        self.app = app
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == STREAM_PATH and scope["method"] in ("GET", "HEAD"):
            await self.stream(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def serve_streams_first(app: Starlette) -> None:
    """Put StreamFirst around the app's middleware stack (built on its first request, as Starlette does). The
    route stays in the router too: for the API schema, and the 405 to other methods."""
    build = app.build_middleware_stack

    def build_with_streams_first() -> ASGIApp:
        return StreamFirst(build(), LiveStream())

    app.build_middleware_stack = build_with_streams_first  # type: ignore[method-assign]


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
