"""Live events over Server-Sent Events, fed by Postgres LISTEN/NOTIFY — no polling.

Each web process holds one LISTEN connection (started with the first subscriber) and fans events out to
its SSE clients. Writers NOTIFY only the `events` row id (activities/projection.py); the hub reads the
rows once per notification burst. A reconnecting browser sends Last-Event-ID and first gets what it
missed from the `events` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import psycopg
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Viewer, require
from api.deps import INT64_MAX
from core.db import libpq_url
from core.tables import EVENTS_CHANNEL, Event

log = logging.getLogger(__name__)
PING_SECONDS = 15
RECONNECT_MS = 1000
CATCH_UP_LIMIT = 1000
QUEUE_SIZE = 1000

router = APIRouter(prefix="/api/events", tags=["events"], dependencies=[require("viewer")])


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, encoded once as an SSE frame and shared by every client it goes to."""

    id: int
    incident_id: int | None
    data: bytes


def encode_event(event: Event) -> Frame:
    # Unnamed (a "message" event): browsers get every kind through one onmessage; the kind is in the data.
    payload = {
        "id": event.id,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "incident_id": event.incident_id,
        "workflow_id": event.workflow_id,
        "step_id": event.step_id,
        "data": event.data,
    }
    assert event.id is not None
    return Frame(event.id, event.incident_id, f"id: {event.id}\r\ndata: {json.dumps(payload)}\r\n\r\n".encode())


class EventHub:
    """One LISTEN connection per process, fanning events out to bounded per-client queues."""

    def __init__(self, engine: Engine, max_clients: int) -> None:
        self._engine = engine
        self.max_clients = max_clients
        self._clients: set[asyncio.Queue[Frame | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_id = 0
        self._ready = asyncio.Event()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def subscribe(self) -> asyncio.Queue[Frame | None]:
        if len(self._clients) >= self.max_clients:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"too many live connections on this web process ({self.max_clients}); try again shortly",
                headers={"Retry-After": "5"},
            )
        queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._clients.add(queue)
        if self._task is None or self._task.done():
            self._ready.clear()
            self._task = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self._ready.wait(), 10)
        except TimeoutError:
            self._clients.discard(queue)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "live events are unavailable: cannot LISTEN on the database",
                headers={"Retry-After": "5"},
            ) from None
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Frame | None]) -> None:
        self._clients.discard(queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _rows_after(self, after: int) -> list[Event]:
        with Session(self._engine) as session:
            rows = session.exec(select(Event).where(col(Event.id) > after).order_by(col(Event.id)).limit(500))
            return list(rows)

    def _max_id(self) -> int:
        with Session(self._engine) as session:
            return session.exec(select(Event.id).order_by(col(Event.id).desc()).limit(1)).first() or 0

    async def _listen(self) -> None:
        url = libpq_url(self._engine.url.render_as_string(hide_password=False))
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    if not self._last_id:
                        self._last_id = await run_in_threadpool(self._max_id)
                    self._ready.set()
                    async for _ in conn.notifies():
                        await self._deliver()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database went away: tell no one, reconnect, catch up
                log.warning("event listener lost its connection (%s); reconnecting", err)
                await asyncio.sleep(1)

    async def _deliver(self) -> None:
        while True:
            rows = await run_in_threadpool(self._rows_after, self._last_id)
            if not rows:
                return
            self._last_id = rows[-1].id or self._last_id
            frames = [encode_event(row) for row in rows]  # once, whatever the number of clients
            for queue in list(self._clients):
                for frame in frames:
                    try:
                        queue.put_nowait(frame)
                    except asyncio.QueueFull:  # a client that cannot keep up is dropped, not waited for
                        self._clients.discard(queue)
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.get_nowait()
                            queue.put_nowait(None)
                        break


def hub_of(request: Request) -> EventHub:
    hub = getattr(request.app.state, "event_hub", None)
    if hub is None:
        settings = request.app.state.settings
        hub = request.app.state.event_hub = EventHub(request.app.state.engine, settings.sse_max_clients)
    return hub


def _missed(engine: Engine, after: int, incident_id: int | None) -> list[Event]:
    with Session(engine) as session:
        query = select(Event).where(col(Event.id) > after)
        if incident_id is not None:
            query = query.where(Event.incident_id == incident_id)
        return list(session.exec(query.order_by(col(Event.id)).limit(CATCH_UP_LIMIT)))


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "a never-ending event stream"}},
)
async def stream(
    request: Request,
    principal: Viewer,
    incident_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    resume_after: Annotated[
        int | None,
        Query(
            alias="last_event_id",
            ge=0,
            le=INT64_MAX,
            description="same as the Last-Event-ID header, for clients that open a new EventSource",
        ),
    ] = None,
) -> EventSourceResponse:
    """Events as they happen (optionally for one incident); resumes after Last-Event-ID."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else resume_after
    hub = hub_of(request)
    queue = await hub.subscribe()
    engine = request.app.state.engine

    async def events() -> AsyncIterator[bytes]:
        try:
            # Browsers reconnect after `retry` ms (with Last-Event-ID) when the stream drops, e.g. on a deploy.
            yield f": connected\r\nretry: {RECONNECT_MS}\r\n\r\n".encode()
            seen = 0
            if after is not None:
                for missed in await run_in_threadpool(_missed, engine, after, incident_id):
                    seen = missed.id or seen
                    yield encode_event(missed).data
            while True:
                live = await queue.get()
                if live is None:
                    return  # too slow: the browser reconnects with Last-Event-ID
                if (live.id or 0) <= seen or (incident_id is not None and live.incident_id != incident_id):
                    continue
                yield live.data
        finally:
            hub.unsubscribe(queue)

    return EventSourceResponse(events(), ping=PING_SECONDS, send_timeout=30)
