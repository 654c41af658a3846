"""Maintenance windows: while one holds, its service (or, with no service, every service) is not checked and opens
no incident, and its time is left out of availability. The API (api/routes/maintenance.py) and the service page's
forms (web/pages/services.py) create and end them here, with the same checks and the same audit rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.errors import Conflict, Invalid, NotFound
from core.events import publish
from core.monitoring import MaintenanceWindow, MaintenanceWindowCreate
from core.services import Service
from core.tables import Event, utcnow

LISTED_MAX = 1000


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


def list_windows(*, session: Session, service: str | None, include_ended: bool) -> list[MaintenanceWindow]:
    """Windows that have not ended (all of them with include_ended), soonest first; `service` narrows to the
    windows that silence it (its own and those of every service)."""
    query = select(MaintenanceWindow).order_by(col(MaintenanceWindow.starts_at), col(MaintenanceWindow.id))
    if not include_ended:
        query = query.where(col(MaintenanceWindow.ends_at) > utcnow())
    if service:
        query = query.where((col(MaintenanceWindow.service) == service) | col(MaintenanceWindow.service).is_(None))
    return list(session.exec(query.limit(LISTED_MAX)))


def _changed(session: Session, row: MaintenanceWindow, action: str, actor: Actor) -> None:
    """Service pages refresh on it (a window starting or ending changes what they show)."""
    data = {"name": row.service, "action": action, "actor": actor.name, "window": row.id}
    publish(session, Event(kind="service.changed", data=data))


def create_window(*, session: Session, body: MaintenanceWindowCreate, actor: Actor) -> MaintenanceWindow:
    """Silence a service (or every service) from starts_at to ends_at: Invalid when it would be over already or
    names no service."""
    if body.ends_at <= utcnow():
        raise Invalid("ends_at: the window would be over already")
    if body.service and session.exec(select(Service.id).where(Service.name == body.service)).first() is None:
        raise Invalid(f"service: no service named {body.service!r}")
    row = MaintenanceWindow(**body.model_dump(), created_by=actor.name)
    session.add(row)
    session.flush()
    record_audit(
        session, actor=actor, action="maintenance.create", target_type="maintenance_window", target_id=row.id,
        after=body.model_dump(mode="json"),
    )  # fmt: skip
    _changed(session, row, "maintenance.create", actor)
    session.commit()
    session.refresh(row)
    return row


def end_window(*, session: Session, window_id: int, actor: Actor) -> MaintenanceWindow:
    """End a window now (one not started yet ends before it starts: it never silences anything); the row stays."""
    row = session.get(MaintenanceWindow, window_id, with_for_update=True)
    if row is None:
        raise NotFound(f"maintenance window {window_id} does not exist")
    now = utcnow()
    if row.ends_at <= now:
        raise Conflict(f"maintenance window {window_id} has ended already")
    before = window_public(row)
    row.ends_at = now
    if row.starts_at >= now:  # not started yet: it now spans an instant in the past (ends_at > starts_at holds)
        row.starts_at = now - timedelta(microseconds=1)
    record_audit(
        session, actor=actor, action="maintenance.end", target_type="maintenance_window", target_id=window_id,
        before=before,
    )  # fmt: skip
    _changed(session, row, "maintenance.end", actor)
    session.commit()
    session.refresh(row)
    return row
