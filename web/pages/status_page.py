"""The public status page (issue 21): /status (HTML) and /status/api/summary.json, for anyone, without logging in.

Read-only and GET only; what it shows is services/status_page.py's (public names, statuses, daily availability,
public updates — nothing internal). Nothing on it links into the app. Each answer is:
- rate-limited per client address, by a token bucket kept in this process (RATE per second, BURST at once; with N
  web processes a client gets up to N times that): beyond it 429 with Retry-After;
- cacheable: Cache-Control: public, max-age=30 and an ETag (If-None-Match → 304); the process renders each answer
  at most once per CACHE_SECONDS, so a crowd costs the database a few queries every few seconds;
- server-rendered with CSS bars: no JavaScript needed, under the site's CSP.

Also here, for responders: the incident page's "Public updates" section (its partial and its form), which writes
through services/status_page.py as the API does.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Responder, actor_of, client_ip, public, require
from api.deps import INT64_MAX
from core.db import session_scope
from core.errors import Invalid
from core.tables import Incident, PublicUpdateCreate
from services.status_page import (
    StatusSummary,
    delete_public_update,
    is_listed,
    list_public_updates,
    percent,
    post_public_update,
    status_summary,
    summary_json,
)
from web.templating import problem_page, templates

templates.env.filters["percent"] = percent

RATE = 1.0  # requests a second, per client address, sustained
BURST = 60  # requests at once
CACHE_SECONDS = 10.0
MAX_AGE = 30
CLIENTS_KEPT = 10_000  # addresses the bucket remembers; the longest idle are forgotten first


class TokenBucket:
    """Per-key token buckets in one process (not shared between web processes). Not thread-safe: call it from the
    event loop (an async dependency or route)."""

    def __init__(
        self, *, rate: float, burst: int, keep: int = CLIENTS_KEPT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.keep, self.clock = rate, burst, keep, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)

    def take(self, key: str) -> float:
        """Take one token for `key`: 0 when granted, else the seconds until one is there."""
        now = self.clock()
        tokens, at = self.buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self.buckets[key] = (tokens, now)  # the most recently seen last
        while len(self.buckets) > self.keep:
            self.buckets.popitem(last=False)
        return wait


@dataclass
class Rendered:
    body: bytes
    etag: str
    media_type: str
    expires: float


@dataclass
class StatusPageState:
    """One process's limiter and rendered answers (app.state.status_page; tests put their own there)."""

    limiter: TokenBucket = field(default_factory=lambda: TokenBucket(rate=RATE, burst=BURST))
    cache_seconds: float = CACHE_SECONDS
    rendered: dict[str, Rendered] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _state(request: Request) -> StatusPageState:
    state: StatusPageState | None = getattr(request.app.state, "status_page", None)
    if state is None:
        state = request.app.state.status_page = StatusPageState()
    return state


def _render(request: Request, kind: str) -> Rendered:
    """The answer of `kind` ("html" or "json"), rendered at most once per cache_seconds in this process."""
    state = _state(request)
    with state.lock:  # one render at a time: a crowd arriving together waits for it rather than each querying
        found = state.rendered.get(kind)
        if found is not None and found.expires > time.monotonic():
            return found
        with session_scope(request.app.state.engine) as session:
            summary = status_summary(session=session)
        if kind == "json":
            body, media_type = json.dumps(summary_json(summary), separators=(",", ":")).encode(), "application/json"
        else:
            body, media_type = _html(request, summary), "text/html; charset=utf-8"
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found = state.rendered[kind] = Rendered(body, etag, media_type, time.monotonic() + state.cache_seconds)
        return found


def _html(request: Request, summary: StatusSummary) -> bytes:
    template = templates.get_template("status/index.html")
    title = request.app.state.settings.status_page_title
    return template.render({"request": request, "s": summary, "title": title}).encode()


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def _answer(request: Request, kind: str) -> Response:
    wait = _state(request).limiter.take(client_ip(request))
    if wait:
        seconds = str(max(1, math.ceil(wait)))
        message = f"too many requests: try again in {seconds} s"
        if kind == "json":
            return Response(json.dumps({"detail": message}), 429, {"Retry-After": seconds}, "application/json")
        return Response(message, 429, {"Retry-After": seconds}, "text/plain; charset=utf-8")
    rendered = await run_in_threadpool(_render, request, kind)
    headers = {"Cache-Control": f"public, max-age={MAX_AGE}", "ETag": rendered.etag}
    if _matches(request.headers.get("if-none-match"), rendered.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(rendered.body, headers=headers, media_type=rendered.media_type)


open_page = APIRouter(include_in_schema=False, dependencies=[public("the public status page: read-only, no login")])


@open_page.get("/status", response_class=HTMLResponse)
async def status_page(request: Request) -> Response:
    return await _answer(request, "html")


@open_page.get("/status/api/summary.json")
async def status_summary_json(request: Request) -> Response:
    return await _answer(request, "json")


# For responders, on the incident page.

viewer = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
responder = APIRouter(include_in_schema=False, dependencies=[require("responder")])
IncidentId = Annotated[int, Path(ge=1, le=INT64_MAX)]


def _updates_partial(request: Request, session: Session, incident_id: int) -> HTMLResponse:
    incident = session.get(Incident, incident_id)
    listed = incident is not None and is_listed(session=session, service=incident.service)
    context = {
        "incident_id": incident_id, "updates": list_public_updates(session=session, incident_id=incident_id),
        "listed": listed,
    }  # fmt: skip
    # htmx swaps the section into the incident page; without JavaScript the link opens it as a page.
    name = "status/_incident_updates.html" if request.headers.get("hx-request") else "status/incident_updates.html"
    return templates.TemplateResponse(request, name, context)


@viewer.get("/incidents/{incident_id}/public-updates", response_class=HTMLResponse)
def incident_public_updates(request: Request, incident_id: IncidentId) -> HTMLResponse:
    with session_scope(request.app.state.engine) as session:
        return _updates_partial(request, session, incident_id)


@responder.post("/incidents/{incident_id}/public-updates", response_class=HTMLResponse)
async def post_incident_public_update(request: Request, incident_id: IncidentId, principal: Responder) -> Response:
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    actor = actor_of(request, principal)

    def write() -> Response:
        with session_scope(request.app.state.engine) as session:
            try:
                fields = {"status": values.get("status"), "body": values.get("body", "")}
                data = PublicUpdateCreate.model_validate(fields)
                post_public_update(session=session, incident_id=incident_id, data=data, actor=actor)
            except ValidationError as err:
                first = err.errors()[0]
                message = f"{first['loc'][0]}: {first['msg'].removeprefix('Value error, ')}"
                return problem_page(request, 422, message, f"/incidents/{incident_id}")
            except Invalid as err:
                return problem_page(request, 422, str(err), f"/incidents/{incident_id}")
        return RedirectResponse(f"/incidents/{incident_id}#public-updates", status_code=status.HTTP_303_SEE_OTHER)

    return await run_in_threadpool(write)


@responder.post("/incidents/{incident_id}/public-updates/{update_id}/delete", response_class=HTMLResponse)
def delete_incident_public_update(
    request: Request, incident_id: IncidentId, update_id: IncidentId, principal: Responder
) -> Response:
    with session_scope(request.app.state.engine) as session:
        delete_public_update(session=session, incident_id=incident_id, update_id=update_id,
                             actor=actor_of(request, principal))  # fmt: skip
    return RedirectResponse(f"/incidents/{incident_id}#public-updates", status_code=status.HTTP_303_SEE_OTHER)


router = APIRouter()
router.include_router(open_page)
router.include_router(viewer)
router.include_router(responder)
