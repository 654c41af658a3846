"""Clear 4xx answers: one readable message per problem, never the (possibly huge) input echoed back.

Domain errors (core/errors.py) are mapped here once: to JSON for the API, and to the page the composition root
passes in (the problem page) for everything a browser navigates to."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DataError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import DomainError, NotFound

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


def install(app: FastAPI, *, upload_limit: int, page: PageHandler | None = None) -> None:
    """The handlers, once for the whole app: a domain error is JSON under /api/, else `page` (when given)."""

    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        if page is None or is_api(request):
            return domain_error_json(exc)
        return await page(request, exc)

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DataError, data_error)
    app.add_exception_handler(DomainError, domain_error)
    app.add_middleware(BodySizeLimit, upload_limit=upload_limit)
