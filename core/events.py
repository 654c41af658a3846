"""Publishing what the dashboard shows: an `events` row plus a NOTIFY of its id, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from core.tables import EVENTS_CHANNEL, Event


def publish(session: Session, event: Event) -> Event:
    """Store the event and announce its id (NOTIFY is delivered only if the transaction commits)."""
    session.add(event)
    session.flush()
    session.execute(text("SELECT pg_notify(:channel, :id)"), {"channel": EVENTS_CHANNEL, "id": str(event.id)})
    return event


def incident_event(session: Session, *, kind: str, incident_id: int, actor: str, **data: Any) -> Event:
    """Publish a human or system change to an incident; `actor` is who did it (shown on the timeline)."""
    return publish(session, Event(kind=kind, incident_id=incident_id, data={"actor": actor, **data}))
