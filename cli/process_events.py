"""`up` tells the dashboard when a child exits or starts again: an `events` row (kind process.exited or
process.restarted, the child's status as data) published as every event is, so the overview's Processes tile and
its feed update live over SSE. Written from a thread of its own: the supervisor's loop never waits for Postgres,
which may be the child that just died (then the event is lost, and the log line and supervisor.json remain).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from core.db import make_engine, session_scope
from core.events import publish
from core.tables import Event

log = logging.getLogger(__name__)


class ProcessEvents:
    """Callable the supervisor calls with (kind, child status); publishes each in a daemon thread, in order."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._engine: Engine | None = None
        self._lock = threading.Lock()  # one at a time: the events keep the order they happened in

    def __call__(self, kind: str, child: dict[str, Any]) -> None:
        threading.Thread(target=self._publish, args=(kind, dict(child)), daemon=True, name="process-event").start()

    def _publish(self, kind: str, child: dict[str, Any]) -> None:
        with self._lock:
            try:
                if self._engine is None:
                    self._engine = make_engine(self._url, pool_size=1)
                with session_scope(self._engine) as session:
                    publish(session, Event(kind=kind, data={"actor": "up", **child}))
            except Exception as err:  # Postgres down or restarting: the log line and supervisor.json still say it
                log.info("could not record %s of %s: %s", kind, child.get("name"), str(err).splitlines()[0][:200])

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
