"""The web application: JSON API routers, pages and health, combined in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.routing import Route
from temporalio.client import Client

from api import (
    agents,
    alerts,
    approvals,
    audit,
    conversations,
    errors,
    health,
    incident_collab,
    incident_templates,
    incidents,
    live,
    maintenance,
    playbooks,
    security,
    services,
    slack,
    users,
    webhook_agents,
    workflows,
)
from api.auth import require
from core.db import make_engine, resolve_database_url
from core.settings import Settings, load_settings
from core.temporal import connect
from web import (
    account_pages,
    admin_pages,
    approval_email_pages,
    approval_pages,
    auth_pages,
    incident_forms,
    overview_pages,
    pages,
)
from web.templating import STATIC_DIR

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, temporal: Client | None = None
) -> FastAPI:
    """Build the app. Without engine/temporal, the lifespan opens them from settings (one per process)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned_engine = None
        if getattr(app.state, "engine", None) is None:
            owned_engine = make_engine(resolve_database_url(settings, stop_at_exit=False))
            app.state.engine = owned_engine
        if getattr(app.state, "temporal", None) is None:
            # Lazy: the web starts even while Temporal is down; /readyz says so.
            app.state.temporal = await connect(settings, lazy=True)
        yield
        hub = getattr(app.state, "event_hub", None)
        if hub is not None:
            await hub.close()
        if owned_engine is not None:
            owned_engine.dispose()

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
    errors.install(app, upload_limit=settings.attachment_max_bytes)
    security.install(app)
    app.include_router(health.router)
    app.include_router(maintenance.router)
    app.include_router(incidents.router)
    app.include_router(incident_collab.router)
    app.include_router(incident_templates.router)
    app.include_router(users.router)
    app.include_router(playbooks.router)
    app.include_router(workflows.router)
    app.include_router(conversations.router)
    app.include_router(webhook_agents.router)  # before agents: /api/agents/webhooks is not an agent name
    app.include_router(agents.router)
    app.include_router(services.router)
    app.include_router(alerts.router)
    app.include_router(alerts.routes)
    app.include_router(approvals.router)
    app.include_router(approvals.policies)
    app.include_router(slack.router)
    app.router.routes.append(Route("/api/events/stream", live.LiveStream(), methods=["GET"]))
    app.include_router(audit.router)
    app.include_router(auth_pages.router)
    app.include_router(incident_forms.router)  # before pages: /incidents/new is not an incident id
    app.include_router(pages.router)
    app.include_router(overview_pages.router)
    app.include_router(approval_email_pages.router)  # before approval_pages: /approvals/email/… is not an id
    app.include_router(approval_pages.router)
    app.include_router(admin_pages.router)
    app.include_router(account_pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

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
