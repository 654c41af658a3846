"""Maintenance windows: while one holds, its service (or, with no service, every service) is not checked and opens
no incident. Listing shows the windows that have not ended; DELETE ends one early (the row stays, ended now)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from sqlmodel import col, select

from api.auth import Responder, actor_of, require
from api.deps import Int64Id, SessionDep
from core.audit import record_audit
from core.monitoring import MaintenanceWindow, MaintenanceWindowCreate
from core.services import SERVICE_NAME, Service
from core.tables import utcnow

router = APIRouter(prefix="/api/maintenance-windows", tags=["monitoring"], dependencies=[require("viewer")])


def window_public(row: MaintenanceWindow) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": row.id,
        "service": row.service,
        "starts_at": row.starts_at.isoformat(),
        "ends_at": row.ends_at.isoformat(),
        "reason": row.reason,
        "active": row.starts_at <= now < row.ends_at,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
    }


@router.get("")
def list_windows(
    session: SessionDep,
    service: Annotated[str | None, Query(pattern=SERVICE_NAME)] = None,
    include_ended: bool = False,
) -> list[dict[str, Any]]:
    """Windows that have not ended (all of them with include_ended), soonest first; `service` narrows to the
    windows that silence it (its own and those of every service)."""
    query = select(MaintenanceWindow).order_by(col(MaintenanceWindow.starts_at), col(MaintenanceWindow.id))
    if not include_ended:
        query = query.where(col(MaintenanceWindow.ends_at) > utcnow())
    if service:
        query = query.where((col(MaintenanceWindow.service) == service) | col(MaintenanceWindow.service).is_(None))
    return [window_public(row) for row in session.exec(query.limit(1000))]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_window(
    request: Request, body: MaintenanceWindowCreate, principal: Responder, session: SessionDep
) -> dict[str, Any]:
    """Silence a service (or every service) from starts_at to ends_at."""
    if body.ends_at <= utcnow():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "ends_at: the window would be over already")
    if body.service and session.exec(select(Service.id).where(Service.name == body.service)).first() is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"service: no service named {body.service!r}")
    row = MaintenanceWindow(**body.model_dump(), created_by=principal.username)
    session.add(row)
    session.flush()
    record_audit(
        session, actor=actor_of(request, principal), action="maintenance.create", target_type="maintenance_window",
        target_id=row.id, after=body.model_dump(mode="json"),
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    return window_public(row)


@router.delete("/{window_id}")
def end_window(request: Request, window_id: Int64Id, principal: Responder, session: SessionDep) -> dict[str, Any]:
    """End a window now (one not started yet ends before it starts: it never silences anything)."""
    row = session.get(MaintenanceWindow, window_id, with_for_update=True)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"maintenance window {window_id} does not exist")
    now = utcnow()
    if row.ends_at <= now:
        raise HTTPException(status.HTTP_409_CONFLICT, f"maintenance window {window_id} has ended already")
    before = window_public(row)
    row.ends_at = now
    if row.starts_at >= now:  # not started yet: it now spans an instant in the past (ends_at > starts_at holds)
        row.starts_at = now - timedelta(microseconds=1)
    record_audit(
        session, actor=actor_of(request, principal), action="maintenance.end", target_type="maintenance_window",
        target_id=window_id, before=before,
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    return window_public(row)
