"""The composition root of the web process: the JSON API (api/router.py) and the pages (web/router.py) in one
FastAPI app, with its engine and Temporal client (one of each per process)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.datastructures import DefaultPlaceholder
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.routing import BaseRoute
from temporalio.client import Client

from api import errors, live, security
from api.auth import require
from api.credential_cache import CredentialCache, watch_own_changes
from api.router import router as api_router
from api.routes import metrics
from core.db import make_engine, resolve_database_url
from core.settings import Settings, load_settings
from core.telemetry import Tracing
from core.temporal import connect
from web.router import router as web_router
from web.templating import STATIC_DIR, domain_error_page

log = logging.getLogger(__name__)


# What an inclusion may carry and still add nothing to its routes (empty, None or FastAPI's default placeholder).
_INCLUSION_SETTINGS = ("prefix", "tags", "dependencies", "responses", "callbacks", "deprecated", "max_body_size")


def flat_routes(router: APIRouter) -> list[BaseRoute]:
    """`router`'s routes with every router included in it replaced by its own routes, in the order they match.

    FastAPI 0.165 keeps an included router as one node that each request walks lazily: it matches the branch, then
    matches it again to handle it, and each match first walks the whole branch below to see whether a route was
    added since. With our ~200 routes in ~50 routers that was a fifth of a short request's Python calls.
    A route already holds its full path and its router's dependencies, so a router included with nothing of its own
    (no prefix, dependencies, tags, ...) adds nothing to it: its routes can be served as one flat list, as FastAPI
    did before. An inclusion that does carry something would be lost here, so it stops the app from being built."""
    flat: list[BaseRoute] = []
    for route in router.routes:
        included = getattr(route, "original_router", None)  # fastapi.routing._IncludedRouter
        if not isinstance(included, APIRouter):
            flat.append(route)
            continue
        context = route.include_context  # type: ignore[attr-defined]
        carried = [name for name in _INCLUSION_SETTINGS if getattr(context, name)]
        carried += [] if context.include_in_schema else ["include_in_schema"]
        carried += [
            name
            for name in ("default_response_class", "generate_unique_id_function")
            if not isinstance(getattr(context, name), DefaultPlaceholder)
        ]
        if carried or context.form_limits or included._low_priority_routes:
            raise RuntimeError(f"a router included with {carried or 'forms or frontend routes'}: declare those on it")
        flat.extend(flat_routes(included))
    return flat


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    temporal: Client | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """Build the app. Without engine/temporal, the lifespan opens them from settings (one per process); without
    tracing, OTEL_EXPORTER_OTLP_ENDPOINT says whether requests and the workflows they start are traced."""
    if settings is None:  # uvicorn's factory, also in each process of `agent-monitor web --workers N`
        settings = load_settings()
        settings.configure_logging()  # a no-op where the command already did
    owned_tracing = tracing is None
    tracing = tracing or Tracing.from_settings(settings, "agent-monitor-web")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned_engine = None
        if getattr(app.state, "engine", None) is None:
            owned_engine = make_engine(
                resolve_database_url(settings, stop_at_exit=False), pool_size=settings.db_pool_size, custom_plans=True
            )
            app.state.engine = owned_engine
        if getattr(app.state, "temporal", None) is None:
            # Lazy: the web starts even while Temporal is down; /readyz says so.
            app.state.temporal = await connect(settings, lazy=True, tracing=tracing)
        untrace_engine = tracing.instrument_engine(app.state.engine)
        app.state.credentials.start(app.state.engine)
        yield
        await app.state.credentials.close()
        untrace_engine()
        hub = getattr(app.state, "event_hub", None)
        if hub is not None:
            await hub.close()
        if owned_engine is not None:
            owned_engine.dispose()
        if owned_tracing:
            tracing.shutdown()

    # No Swagger UI (it loads from a CDN); the schema itself is served to logged-in users below.
    app = FastAPI(
        title="Agent Monitor",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.temporal = temporal
    # Callers remembered while Postgres says no credential changed; used only once the lifespan has it listening.
    app.state.credentials = CredentialCache(settings.credential_cache_seconds)
    watch_own_changes()
    errors.install(app, upload_limit=settings.attachment_max_bytes, page=domain_error_page)
    security.install(app)
    if tracing.provider is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # One span per request, none per ASGI message; no spans for scrapes, probes, assets or hour-long streams.
        excluded = "/metrics$,/healthz$,/readyz$,/static/,/api/events/stream"
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracing.provider, excluded_urls=excluded, exclude_spans=["receive", "send"]
        )
    app.include_router(api_router)
    app.include_router(metrics.router)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.router.routes[:] = flat_routes(app.router)
    live.serve_streams_first(app)

    generate = app.openapi

    def openapi_schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.document_validation_errors(generate())
            app.openapi_schema["paths"]["/api/events/stream"] = live.STREAM_OPENAPI
        return app.openapi_schema

    app.openapi = openapi_schema  # type: ignore[method-assign]

    @app.get("/api/openapi.json", include_in_schema=False, dependencies=[require("viewer")])
    def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    return app
