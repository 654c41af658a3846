"""Maintenance windows: while one holds, its service (or, with no service, every service) is not checked and opens
no incident. Listing shows the windows that have not ended; DELETE ends one early (the row stays, ended now).
The rules are services/maintenance.py's, shared with the service page's forms."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status

from api.auth import Responder, actor_of, require
from api.deps import Int64Id, SessionDep
from core.monitoring import MaintenanceWindowCreate
from core.services import SERVICE_NAME
from services import maintenance
from services.maintenance import window_public

router = APIRouter(prefix="/api/maintenance-windows", tags=["monitoring"], dependencies=[require("viewer")])


@router.get("")
def list_windows(
    session: SessionDep,
    service: Annotated[str | None, Query(pattern=SERVICE_NAME)] = None,
    include_ended: bool = False,
) -> list[dict[str, Any]]:
    """Windows that have not ended (all of them with include_ended), soonest first; `service` narrows to the
    windows that silence it (its own and those of every service)."""
    rows = maintenance.list_windows(session=session, service=service, include_ended=include_ended)
    return [window_public(row) for row in rows]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_window(
    request: Request, body: MaintenanceWindowCreate, principal: Responder, session: SessionDep
) -> dict[str, Any]:
    """Silence a service (or every service) from starts_at to ends_at."""
    row = maintenance.create_window(session=session, body=body, actor=actor_of(request, principal))
    return window_public(row)


@router.delete("/{window_id}")
def end_window(request: Request, window_id: Int64Id, principal: Responder, session: SessionDep) -> dict[str, Any]:
    """End a window now (one not started yet ends before it starts: it never silences anything)."""
    row = maintenance.end_window(session=session, window_id=window_id, actor=actor_of(request, principal))
    return window_public(row)
