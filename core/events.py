"""Publishing what the dashboard shows: an `events` row plus a NOTIFY of its id, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, Text, bindparam, cast, func, insert, select
from sqlmodel import Session

from core.tables import EVENTS_CHANNEL, Event

_EVENTS: Table = Event.__table__  # type: ignore[attr-defined]
_COLUMNS = ("at", "kind", "incident_id", "workflow_id", "step_id", "data")
_STORED = (
    insert(_EVENTS)
    .values({name: bindparam(name, type_=_EVENTS.c[name].type) for name in _COLUMNS})
    .returning(_EVENTS.c.id)
    .cte("stored")
)
# The row and its NOTIFY in one statement: one round trip, and no unit of work for a row nothing changes later.
_PUBLISH = select(_STORED.c.id, func.pg_notify(EVENTS_CHANNEL, cast(_STORED.c.id, Text)))


def publish(session: Session, event: Event) -> Event:
    """Store the event and announce its id (NOTIFY is delivered only if the transaction commits). The event gets its
    id; it is not added to the session (nothing changes an event once published)."""
    session.flush()  # what the event is about (an incident added in this session) is written first
    values = {name: getattr(event, name) for name in _COLUMNS}
    event.id = session.execute(_PUBLISH, values).one()[0]
    return event


def incident_event(session: Session, *, kind: str, incident_id: int, actor: str, **data: Any) -> Event:
    """Publish a human or system change to an incident; `actor` is who did it (shown on the timeline)."""
    return publish(session, Event(kind=kind, incident_id=incident_id, data={"actor": actor, **data}))
