"""Incident rows written straight to Postgres: many incidents fast, with no workflow started."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from core.tables import Incident
from services.playbooks import BUILTIN_VERSION

DEFAULTS: dict[str, Any] = {
    "title": "disk full",
    "service": "storage",
    "severity": "P3",
    "playbook_version": BUILTIN_VERSION,
}


def insert_incidents(engine, rows: list[dict[str, Any]]) -> list[int]:
    """Incident rows in one transaction, in order (defaults: open, P3, the built-in playbook); their ids."""
    with Session(engine) as session:
        incidents = [Incident(**{**DEFAULTS, **fields}) for fields in rows]
        for incident in incidents:
            session.add(incident)
            session.flush()  # one at a time: ids rise in list order
        session.commit()
        return [incident.id for incident in incidents if incident.id is not None]


def insert_incident(engine, **fields: Any) -> int:
    """One incident row; returns its id."""
    (incident_id,) = insert_incidents(engine, [fields])
    return incident_id
