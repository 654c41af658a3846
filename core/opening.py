"""What opening an incident looks like to the code below the services layer.

Scheduled monitoring (an activity) opens incidents, but activities sit below services/: the worker hands the
monitoring activity services.incidents.open.open_incident as an `OpenIncident` (dependency inversion), so there is
still one way to open an incident and no import runs upward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client

from core.audit import Actor
from core.settings import Settings
from core.tables import Incident, IncidentCreate


@dataclass(frozen=True)
class Opened:
    incident: Incident  # detached, loaded
    created: bool  # False: the one stored under the same idempotency key, or an open incident this one joined
    reopened: bool = False  # an ended incident this one reopened


# In the opener's transaction: an ended incident to reopen instead of storing a new one (monitoring: the outage's
# incident resolved while it went on, or the service's last one resolved moments ago: a flap) with why; an open
# incident to join (the service's incident someone already opened); and what to add to a new incident before it
# commits (its first message).
Reopen = Callable[[Session], tuple[Incident, str] | None]
Join = Callable[[Session], Incident | None]
OnCreated = Callable[[Session, Incident], None]


class OpenIncident(Protocol):
    async def __call__(
        self,
        *,
        engine: Engine,
        temporal: Client,
        settings: Settings,
        data: IncidentCreate,
        actor: Actor,
        idempotency_key: str | None = None,
        playbook_fallback: bool = False,
        reopen: Reopen | None = None,
        join: Join | None = None,
        on_created: OnCreated | None = None,
    ) -> Opened: ...
