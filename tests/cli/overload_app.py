"""A small app for tests/cli/test_web_server.py, served by a real uvicorn with `agent-monitor web`'s options and
admission limit: GET /?s=N answers after N seconds, so a test can hold every turn for as long as it likes."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from api.admission import AdmissionLimit


async def slow(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):  # the whole body, as a route reads it
        pass
    seconds = float(parse_qs(scope["query_string"].decode()).get("s", ["0"])[0])
    await asyncio.sleep(seconds)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def create() -> AdmissionLimit:
    return AdmissionLimit(slow)
