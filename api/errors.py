"""Clear 4xx answers: one readable message per problem, never the (possibly huge) input echoed back.

Domain errors (core/errors.py) are mapped here once: to JSON for the API, and to the page the composition root
passes in (the problem page) for everything a browser navigates to. So are the errors of a dependency that is
down (Postgres, Temporal: restarted by `up`, or unreachable): a 503 with Retry-After, never a 500."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

from core.errors import DomainError, NotFound, Unavailable

__all__ = ["NotFound", "install"]

MAX_BODY_BYTES = 1_000_000
PageHandler = Callable[[Request, DomainError], Awaitable[Response]]


class FieldError(BaseModel):
    field: str
    message: str


class ValidationErrorBody(BaseModel):
    """What every 422 looks like: one readable line, and the problems per field."""

    detail: str
    errors: list[FieldError]


def document_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI schema describe our 422 body instead of FastAPI's default one."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ValidationErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in body.pop("$defs", {}).items():
        components[name] = definition
    components["HTTPValidationError"] = body
    return schema


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


# Uploads may be bigger than other bodies: the attachment limit plus room for the multipart framing.
UPLOAD_PATH = re.compile(r"^/(api/)?incidents/[0-9]+/attachments$")
MULTIPART_OVERHEAD = 64 * 1024


class BodySizeLimit:
    """Refuse request bodies over the limit with 413 before reading them (uploads: the attachment limit)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, upload_limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            upload = UPLOAD_PATH.match(scope["path"]) is not None
            limit = self.upload_limit + MULTIPART_OVERHEAD if upload else self.limit
            shown = self.upload_limit if upload else limit
            if length is not None and (not length.isdigit() or int(length) > limit):
                response = JSONResponse({"detail": f"request body larger than {shown} bytes"}, status_code=413)
                await response(scope, receive, send)
                return
            if length is None and not upload:  # chunked: count what arrives (uploads count their file themselves)
                receive = _limited(receive, limit, f"request body larger than {shown} bytes")
        await self.app(scope, receive, send)


def _limited(receive: Receive, limit: int, detail: str) -> Receive:
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise StarletteHTTPException(status_code=413, detail=detail)
        return message

    return limited


def unprocessable(detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 422 in the shape schema validation answers: "field: why" becomes the field and its message."""
    field, _, message = detail.partition(": ")
    if not message:
        field, message = "body", detail
    return JSONResponse(
        {"detail": detail, "errors": [{"field": field, "message": message}]}, status_code=422, headers=headers
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Our own 422s (checks beyond the schema) get the same body shape as schema validation errors."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 422 and isinstance(exc.detail, str):
        return unprocessable(exc.detail, exc.headers)
    return await http_exception_handler(request, exc)


def domain_error_json(exc: DomainError) -> JSONResponse:
    if exc.status == 422:
        return unprocessable(str(exc), exc.headers or None)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers or None)


def is_api(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path in ("/healthz", "/readyz")


async def data_error(_request: Request, exc: Exception) -> JSONResponse:
    """Values the database refuses (a NUL character in text, a number out of range) are the caller's 422."""
    assert isinstance(exc, StatementError)
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else "invalid value"
    return JSONResponse(
        {"detail": f"body: the database refused a value: {reason}", "errors": [{"field": "body", "message": reason}]},
        status_code=422,
    )


DEPENDENCY_RETRY_AFTER = 5  # seconds: about what `up` takes to restart Postgres or Temporal
# SQLSTATE classes of a server that is not there: connection exceptions, and shutdown/crash/starting up.
DOWN_SQLSTATES = ("08", "57P")
TEMPORAL_DOWN = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


class DependencyDown(Unavailable):
    """Postgres or Temporal does not answer now: 503, and when to try again."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(DEPENDENCY_RETRY_AFTER)}


def dependency_down(exc: BaseException) -> DependencyDown | None:
    """What a caller should hear for an error of the database or of Temporal that retrying later may cure (None:
    not such an error). A lost connection or a refused one, a pool with no free connection, a transaction the
    database gave up (a deadlock, a serialisation failure, a cancelled statement), Temporal unreachable."""
    if isinstance(exc, PoolTimeout):
        return DependencyDown("the database is busy: no connection was free in time; try again in a few seconds")
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, psycopg.OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        sqlstate = getattr(orig, "sqlstate", None) or ""
        if not sqlstate or sqlstate.startswith(DOWN_SQLSTATES):
            return DependencyDown("the database is unavailable right now; try again in a few seconds")
        return DependencyDown(f"the database could not finish this now ({sqlstate}); try again in a few seconds")
    if isinstance(exc, RPCError) and exc.status in TEMPORAL_DOWN:
        return DependencyDown("Temporal is unavailable right now; try again in a few seconds")
    # A lazy client that has not connected yet (the web started while Temporal was down) says it this way.
    if type(exc) is RuntimeError and str(exc).startswith("Failed client connect"):
        return DependencyDown("Temporal is unavailable right now; try again in a few seconds")
    return None


def install(app: FastAPI, *, upload_limit: int, page: PageHandler | None = None) -> None:
    """The handlers, once for the whole app: a domain error is JSON under /api/, else `page` (when given)."""

    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        if page is None or is_api(request):
            return domain_error_json(exc)
        return await page(request, exc)

    async def unavailable(request: Request, exc: Exception) -> Response:
        down = dependency_down(exc)
        if down is None:
            raise exc  # not a dependency being down: the 500 it always was
        return await domain_error(request, down)

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DataError, data_error)
    app.add_exception_handler(DomainError, domain_error)
    for dependency_error in (DBAPIError, PoolTimeout, psycopg.OperationalError, RPCError, RuntimeError):
        app.add_exception_handler(dependency_error, unavailable)
    app.add_middleware(BodySizeLimit, upload_limit=upload_limit)
