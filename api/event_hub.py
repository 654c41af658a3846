"""The event hub of one web process: one LISTEN connection to Postgres, fanned out to every SSE client.

Writers NOTIFY only the `events` row id (activities/projection.py); the hub reads the rows once per notification
burst, encodes each once and queues the same bytes to every client (bounded queues: a client that cannot keep up is
dropped and reconnects). Every SSE_RECHECK_SECONDS one query tells it which of its streams' tokens and sessions
still hold; it ends the others' streams. The endpoint that serves the streams is api/live.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine, Table, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Principal
from core.db import libpq_url
from core.metrics import SSE_DROPPED, SSE_REFUSED
from core.settings import Settings
from core.tables import EVENTS_CHANNEL, Event
from services.identity import live_credentials

EVENTS: Table = Event.__table__  # type: ignore[attr-defined]
log = logging.getLogger(__name__)

PING_SECONDS = 15
RECONNECT_MS = 1000
CATCH_UP_LIMIT = 1000
QUEUE_SIZE = 1000
READ_LIMIT = 500  # events read at a time by the hub (a longer burst is read in several)
# Ids are taken when a row is inserted, rows are seen when their transaction commits: an id skipped by a read (a
# hole) may still come, from a transaction that took it earlier and commits later. Holes are looked for again with
# every read for this long (an id a rolled-back transaction took never comes), at most HOLES_MAX of them.
HOLE_SECONDS = 60.0
HOLES_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, encoded once as an SSE frame and shared by every client it goes to."""

    id: int
    incident_id: int | None
    data: bytes


def encode_event(event: Event | Any) -> Frame:
    """An `events` row (the ORM object or a plain row) as an SSE frame."""
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


class TooManyClients(RuntimeError):
    pass


class OverUserLimit(RuntimeError):
    """This user or token already holds its share of the process's streams: 429, unlike the process's 503."""


class ListenUnavailable(RuntimeError):
    pass


class Full(Exception):
    pass


class Client:
    """One live connection: a bounded mailbox of frames, and its task (cancelled when it cannot keep up).

    A list and a future rather than an asyncio.Queue: with thousands of idle clients per process the queue's
    four deques were the largest per-client cost after the connection itself (bench/sse.py)."""

    __slots__ = ("frames", "task", "principal", "_waiter")

    def __init__(self, task: asyncio.Task[Any] | None, principal: Principal | None = None) -> None:
        self.frames: list[Frame | None] = []  # None: the stream ends (server shutdown, credentials ended)
        self.task = task
        self.principal = principal  # whose stream: capped per user and token, re-checked by the hub
        self._waiter: asyncio.Future[None] | None = None

    def put(self, frame: Frame | None) -> None:
        if len(self.frames) >= QUEUE_SIZE:
            raise Full
        self.frames.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self) -> list[Frame | None]:
        """Everything waiting, at least one frame (waits for it)."""
        while not self.frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frames, self.frames = self.frames, []
        return frames

    def drop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def end(self) -> None:
        """End the stream cleanly (the browser reconnects after `retry`), or at once if its mailbox is full."""
        try:
            self.put(None)
        except Full:
            self.drop()


PING = Frame(0, None, b": ping\r\n\r\n")


def _credential(principal: Principal) -> int | str | None:
    """What a stream is re-checked by: its API token's id, or its session's id (never equal: int and str)."""
    return principal.token_id if principal.token_id is not None else principal.session_id


def _release(counts: Counter[int], key: int | None) -> None:
    if key is not None:
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]


class EventHub:
    """One LISTEN connection per process, fanning encoded events out to bounded per-client mailboxes, and one
    ping for all clients every PING_SECONDS (no task per client)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings  # SSE_MAX_CLIENTS, SSE_MAX_PER_USER, SSE_MAX_PER_TOKEN, SSE_RECHECK_SECONDS
        self._clients: set[Client] = set()
        self._per_user: Counter[int] = Counter()
        self._per_token: Counter[int] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._last_id = 0
        self._holes: dict[int, float] = {}  # id skipped → when (monotonic): it may still be committed
        self._ready = asyncio.Event()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def subscribe(self, principal: Principal | None = None) -> Client:
        """A mailbox for the calling task's stream; `principal` (whose stream) is capped and re-checked."""
        limits = self._settings
        if principal is not None:
            if principal.token_id is not None and self._per_token[principal.token_id] >= limits.sse_max_per_token:
                SSE_REFUSED.labels("token").inc()
                over = f"this API token ({limits.sse_max_per_token}, SSE_MAX_PER_TOKEN)"
                raise OverUserLimit(f"too many live connections for {over} on this web process; close one first")
            if self._per_user[principal.user_id] >= limits.sse_max_per_user:
                SSE_REFUSED.labels("user").inc()
                over = f"user {principal.username} ({limits.sse_max_per_user}, SSE_MAX_PER_USER)"
                raise OverUserLimit(f"too many live connections for {over} on this web process; close one first")
        if len(self._clients) >= limits.sse_max_clients:
            SSE_REFUSED.labels("process").inc()
            raise TooManyClients(
                f"too many live connections on this web process ({limits.sse_max_clients}); try again shortly"
            )
        client = Client(asyncio.current_task(), principal)
        self._clients.add(client)
        if principal is not None:
            self._per_user[principal.user_id] += 1
            if principal.token_id is not None:
                self._per_token[principal.token_id] += 1
        if self._task is None or self._task.done():
            self._ready.clear()
            self._task = asyncio.create_task(self._listen())
        if self._pinger is None or self._pinger.done():
            self._pinger = asyncio.create_task(self._ping())
        if self._stopper is None or self._stopper.done():
            self._stopper = asyncio.create_task(self._end_streams_on_shutdown())
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._recheck())
        try:
            await asyncio.wait_for(self._ready.wait(), 10)
        except TimeoutError:
            self.unsubscribe(client)
            raise ListenUnavailable("live events are unavailable: cannot LISTEN on the database") from None
        return client

    def unsubscribe(self, client: Client) -> None:
        if client not in self._clients:
            return  # already gone (each stream's exits all call this)
        self._clients.remove(client)
        if (principal := client.principal) is not None:
            _release(self._per_user, principal.user_id)
            _release(self._per_token, principal.token_id)

    async def close(self) -> None:
        for task in (self._task, self._pinger, self._stopper, self._checker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _rows_after(self, after: int, holes: list[int]) -> list[Any]:
        """Events after `after`, and those of `holes` committed since: plain rows (no ORM objects to build: this
        runs for every event, before any client gets it)."""
        newer = EVENTS.c.id > after
        query = sa_select(EVENTS).where(or_(newer, EVENTS.c.id.in_(holes)) if holes else newer)
        with self._engine.connect() as conn:
            return list(conn.execute(query.order_by(EVENTS.c.id).limit(READ_LIMIT)).all())

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
                    async for notify in conn.notifies():
                        if not self._covered(notify.payload):
                            await self._deliver()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database went away: tell no one, reconnect, catch up
                log.warning("event listener lost its connection (%s); reconnecting", err)
                await asyncio.sleep(1)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_SECONDS)
            self._fan_out([PING])

    def _live_credentials(self, held: set[int | str | None]) -> set[int | str]:
        tokens = [key for key in held if isinstance(key, int)]
        sessions = [key for key in held if isinstance(key, str)]
        with self._engine.connect() as db:
            return live_credentials(db=db, token_ids=tokens, session_ids=sessions)

    async def _recheck(self) -> None:
        """Every SSE_RECHECK_SECONDS, end the streams whose token or session no longer holds: one query for all."""
        while True:
            await asyncio.sleep(self._settings.sse_recheck_seconds)
            held = {client: _credential(client.principal) for client in self._clients if client.principal}
            if not held:
                continue
            try:
                live = await run_in_threadpool(self._live_credentials, set(held.values()))
            except Exception as err:  # no database, no revoke either: the next round catches up
                log.warning("cannot re-check the credentials of live streams (%s)", err)
                continue
            for client, credential in held.items():
                if credential not in live:
                    self.unsubscribe(client)
                    client.end()  # the browser's reconnect then gets 401

    async def _end_streams_on_shutdown(self) -> None:
        # One waiter for the whole process (sse-starlette's shared shutdown watcher: uvicorn's SIGTERM), not
        # one per client: every stream then ends cleanly so uvicorn's graceful shutdown does not wait on it.
        await EventSourceResponse._listen_for_exit_signal()
        for client in list(self._clients):
            client.end()

    def _covered(self, payload: str) -> bool:
        """Whether the notified event was read already: the notifications of one commit arrive together, and the
        read after the first of them brought every row (each one after it cost a thread hop and an empty query)."""
        try:
            event_id = int(payload)
        except ValueError:
            return False  # not one of ours: read, as before
        return event_id <= self._last_id and event_id not in self._holes

    async def _deliver(self) -> None:
        while True:
            self._forget_old_holes()
            rows = await run_in_threadpool(self._rows_after, self._last_id, list(self._holes))
            for row in rows:
                self._advance(row.id or 0)
            if rows:
                self._fan_out([encode_event(row) for row in rows])  # encoded once, whatever the number of clients
            if len(rows) < READ_LIMIT:
                return  # all there was (a row committed after this read is notified on its own)

    def _advance(self, event_id: int) -> None:
        """Note a row read: a hole filled, or the newest id (the ids it skips become holes)."""
        if self._holes.pop(event_id, None) is not None or event_id <= self._last_id:
            return
        now = time.monotonic()
        skipped = range(self._last_id + 1, event_id)
        if len(skipped) <= HOLES_MAX:  # not a jump of the sequence (after a crash it skips ids it had cached)
            for hole in skipped:
                if len(self._holes) >= HOLES_MAX:
                    break
                self._holes[hole] = now
        self._last_id = event_id

    def _forget_old_holes(self) -> None:
        if self._holes:
            oldest = time.monotonic() - HOLE_SECONDS
            for hole in [h for h, at in self._holes.items() if at < oldest]:
                del self._holes[hole]

    def _fan_out(self, frames: list[Frame]) -> None:
        for client in list(self._clients):
            try:
                for frame in frames:
                    client.put(frame)
            except Full:
                # A client that cannot keep up is dropped, not waited for: it reconnects with Last-Event-ID.
                self.unsubscribe(client)
                client.drop()
                SSE_DROPPED.inc()
