"""Admission: how many requests one web process works on at once, and a clear refusal beyond that.

A process past its capacity does not get faster by accepting more: each request it takes on waits longer for a
worker thread and a pooled connection, the event loop's turns grow to seconds, and clients give up or reuse a
connection the server is closing. So at most `limit` requests run at once; the next ones wait up to `wait` seconds
for a turn, first come first served, and the rest get a 503 with Retry-After — an answer, which a client or a load
balancer can act on, never a connection closed without one.

A request is counted once its body has arrived (up to BUFFER_BYTES are read first, outside the limit), so clients
that send slowly cannot hold the turns; bigger bodies (attachment uploads) are let through uncounted. Not counted
either: live-event streams (they last for hours and have their own limits, SSE_MAX_*), health probes and metrics
scrapes (they must answer while the process is busy), static assets.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Sized against what one process can work on at once: anyio's 40 worker threads run the routes' database work on a
# pool of 15 connections (core/db.py: 5 + 10 overflow); more requests in flight only wait inside, for a thread or a
# connection, while their share of the event loop slows everyone else.
LIMIT = 32
# Long enough to ride out a burst, short enough to answer before a client's own timeout (httpx's default: 5 s).
WAIT_SECONDS = 3.0
RETRY_AFTER_SECONDS = 2
NOT_COUNTED = ("/api/events/stream", "/healthz", "/readyz", "/metrics", "/static/")
BUFFER_BYTES = 1_000_000  # api/errors.py's MAX_BODY_BYTES: every body but an upload's


class AdmissionLimit:
    """ASGI middleware: at most `limit` requests at once, `wait` seconds in line, then 503 with Retry-After."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int = LIMIT,
        wait: float = WAIT_SECONDS,
        retry_after: int = RETRY_AFTER_SECONDS,
        not_counted: tuple[str, ...] = NOT_COUNTED,
    ) -> None:
        self.app = app
        self.limit = limit
        self.wait = wait
        self.not_counted = not_counted
        self.refusal = json.dumps(
            {"detail": f"the server is busy; try again in {retry_after} s"}, separators=(",", ":")
        ).encode()
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.refusal)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.not_counted):
            await self.app(scope, receive, send)
            return
        buffered = await read_body(scope, receive)
        if buffered is None:  # an upload: its own size limit bounds it
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # created in the server's event loop
            self._slots = asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait)
        except TimeoutError:
            await send({"type": "http.response.start", "status": 503, "headers": self.headers})
            await send({"type": "http.response.body", "body": self.refusal})
            return
        try:
            await self.app(scope, replay(buffered, receive), send)
        finally:
            self._slots.release()


async def read_body(scope: Scope, receive: Receive) -> list[Message] | None:
    """The request's messages up to the end of its body (or the client leaving); None, with nothing read, for a
    declared length over BUFFER_BYTES. A chunked body that outgrows it is handed on as far as it was read."""
    headers = dict(scope["headers"])
    length = headers.get(b"content-length")
    if length is None and b"transfer-encoding" not in headers:
        return []  # no body
    if length is not None and (not length.isdigit() or int(length) > BUFFER_BYTES):
        return None
    messages: list[Message] = []
    size = 0
    while size <= BUFFER_BYTES:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
        size += len(message.get("body", b""))
    return messages


def replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` that gives the messages read already, then the rest from the connection."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
