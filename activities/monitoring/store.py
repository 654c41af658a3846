"""The monitor's SQL: loading a window's due services (adding a new service's state first), the outages still
without an incident, writing a batch of results with the states they move on (one transaction, the recoveries on
their incidents included, and the ends of slow spells on theirs, the uptime rollups and a `service.status` event
per change of a service's status), skipping silenced checks (counted as maintenance in the rollups), linking an
outage to its incident, pruning old results and rollups.

Each method is one blocking transaction: the tick runs them in a thread.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select

from activities.monitoring import rollups
from activities.monitoring.degraded import record_spell_end
from activities.monitoring.outages import record_recovery
from activities.monitoring.rows import Due, Outage, Result, Window
from core.db import session_scope
from core.events import publish
from core.monitoring import ERROR_MAX, MaintenanceWindow, Tracked, UptimeMetric, spread
from core.payloads import MonitorTick
from core.services import ServiceBase
from core.tables import Event, utcnow

log = logging.getLogger(__name__)

PRUNE_BATCH = 10_000

MISSING_STATES = text("""
SELECT s.id, (s.config ->> 'interval_seconds')::float AS interval_seconds
FROM services s LEFT JOIN service_states st ON st.service_id = s.id
WHERE st.service_id IS NULL AND s.enabled AND s.id % :shards = :shard
""")

ADD_STATE = text("""
INSERT INTO service_states (service_id, status, consecutive_failures, consecutive_passes, episode, next_check_at)
VALUES (:service_id, 'unknown', 0, 0, 0, :next_check_at)
ON CONFLICT (service_id) DO NOTHING
""")

DUE = text("""
SELECT s.id, s.name, s.config, st.status, st.consecutive_failures, st.consecutive_passes, st.episode,
       st.failing_since, st.incident_id, st.next_check_at
FROM services s JOIN service_states st ON st.service_id = s.id
WHERE s.enabled AND s.id % :shards = :shard AND st.next_check_at < :until
ORDER BY st.next_check_at
""")

# Outages with no incident yet, and those whose incident was resolved or closed while they go on — a check failed
# after it ended (reopened: no outage is ever without an open incident). A service that passes again but not yet
# `recovery_threshold` times is recovering: its ended incident stays ended.
PENDING_OUTAGES = text("""
SELECT s.id, s.name, s.config, st.episode, st.failing_since, st.last_error, st.incident_id
FROM services s JOIN service_states st ON st.service_id = s.id
LEFT JOIN incidents i ON i.id = st.incident_id
WHERE s.enabled AND s.id % :shards = :shard AND st.status = 'down'
  AND (st.incident_id IS NULL OR (i.status IN ('resolved', 'closed') AND st.consecutive_passes = 0
                                  AND st.last_checked_at > coalesce(i.resolved_at, i.closed_at, i.updated_at)))
""")

# A service's row first (what a DELETE of it locks, before its cascade reaches the state), then its state: the
# order a DELETE takes them in, so a flush and a DELETE never deadlock.
LOCK_SERVICES = text("SELECT id FROM services WHERE id IN :ids ORDER BY id FOR KEY SHARE").bindparams(
    bindparam("ids", expanding=True)
)
LOCK_STATES = text(
    "SELECT service_id, incident_id FROM service_states WHERE service_id IN :ids ORDER BY service_id FOR UPDATE"
).bindparams(bindparam("ids", expanding=True))

UPDATE_STATE = text("""
UPDATE service_states SET
  status = CAST(:status AS varchar), consecutive_failures = :consecutive_failures,
  consecutive_passes = :consecutive_passes,
  episode = :episode, failing_since = :failing_since,
  incident_id = CASE WHEN CAST(:clear_incident AS boolean) THEN NULL ELSE incident_id END,
  next_check_at = :next_check_at, last_checked_at = :checked_at,
  last_change_at = CASE WHEN status <> CAST(:status AS varchar) THEN :checked_at ELSE last_change_at END,
  last_error = :last_error
WHERE service_id = :service_id
""")

# A silenced check moves the schedule on; an outage whose incident did not open yet is forgotten (the service is
# being worked on: after the window, checks build a new streak).
SKIP_SILENCED = text("""
UPDATE service_states SET next_check_at = :next_check_at,
  status = CASE WHEN status = 'down' AND incident_id IS NULL THEN 'unknown' ELSE status END,
  consecutive_failures = CASE WHEN status = 'down' AND incident_id IS NULL THEN 0 ELSE consecutive_failures END,
  failing_since = CASE WHEN status = 'down' AND incident_id IS NULL THEN NULL ELSE failing_since END
WHERE service_id = :service_id
""")

# An unopened outage last checked more than three intervals ago (the service was disabled since, or the monitor
# stopped) is forgotten rather than opened from old failures: the next checks build a new streak.
FORGET_STALE_OUTAGES = text("""
UPDATE service_states st SET status = 'unknown', consecutive_failures = 0, failing_since = NULL
FROM services s
WHERE st.service_id = s.id AND s.id % :shards = :shard AND st.status = 'down' AND st.incident_id IS NULL
  AND st.last_checked_at < now() - make_interval(secs => 3 * (s.config ->> 'interval_seconds')::float)
""")

SET_INCIDENT = text("""
WITH state AS (
  UPDATE service_states SET incident_id = :incident_id
  WHERE service_id = :service_id AND episode = :episode AND status = 'down' AND incident_id IS NULL
  RETURNING service_id, failing_since
)
UPDATE uptime_metrics m SET incident_id = :incident_id
FROM state
WHERE m.service_id = state.service_id AND m.checked_at >= state.failing_since AND m.status = 'down'
  AND m.incident_id IS NULL
""")


PRUNE = text("""
DELETE FROM uptime_metrics WHERE id IN (
  SELECT id FROM uptime_metrics WHERE checked_at < :cutoff ORDER BY checked_at LIMIT :batch
)
""")


class MonitorStore:
    """The monitor's reads and writes of `service_states`, `uptime_metrics` and maintenance windows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, tick: MonitorTick, until: datetime) -> tuple[list[Due], list[Window]]:
        """The shard's enabled services due before `until` (a new service gets its state first, its first check
        spread over one interval), and the maintenance windows that hold before then."""
        shard = {"shard": tick.shard, "shards": tick.shards}
        with self.engine.begin() as conn:
            missing = conn.execute(MISSING_STATES, shard).all()
            if missing:
                now = utcnow()
                conn.execute(
                    ADD_STATE,
                    [
                        {"service_id": sid, "next_check_at": now + timedelta(seconds=spread(sid, interval or 60))}
                        for sid, interval in missing
                    ],
                )
            rows = conn.execute(DUE, {**shard, "until": until}).all()
            windows = _windows(conn, until)
        due = []
        for sid, name, config, status, failures, passes, episode, since, incident_id, next_at in rows:
            try:
                parsed = ServiceBase.model_validate(config)
            except ValidationError:
                log.warning("service %s's stored definition is no longer valid; it is not checked", name)
                continue
            state = Tracked(status, failures, passes, episode, since, incident_id)
            due.append(Due(sid, name, parsed, state, next_at))
        return due, windows

    def pending_outages(self, tick: MonitorTick) -> tuple[list[Outage], list[Window]]:
        """Outages without an incident yet (those gone stale forgotten first) or whose incident ended while they go
        on, and the maintenance windows holding now."""
        with self.engine.begin() as conn:
            conn.execute(FORGET_STALE_OUTAGES, {"shard": tick.shard, "shards": tick.shards})
            rows = conn.execute(PENDING_OUTAGES, {"shard": tick.shard, "shards": tick.shards}).all()
            windows = _windows(conn, utcnow())
        pending = []
        for sid, name, config, episode, since, error, ended in rows:
            try:
                pending.append(Outage(sid, name, ServiceBase.model_validate(config), episode, since, error, ended))
            except ValidationError:
                continue
        return pending, windows

    def skip(self, item: Due, scheduled_at: datetime) -> None:
        """Move a silenced check's schedule on and count it as maintenance in the rollups, in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(SKIP_SILENCED, {"service_id": item.service_id, "next_check_at": item.next_check_at})
            rollups.add_silenced(conn, item.service_id, scheduled_at)

    def write(self, batch: list[Result]) -> list[Result]:
        """Store the results, move the states on and record the recoveries on their incidents, in one transaction;
        the results stored (not those of a service deleted meanwhile, nor those another attempt of this tick stored
        already)."""
        with session_scope(self.engine) as session:
            ids = sorted({r.due.service_id for r in batch})
            alive = set(session.execute(LOCK_SERVICES, {"ids": ids}).scalars())
            incidents: dict[int, int | None] = dict(session.execute(LOCK_STATES, {"ids": sorted(alive)}).all())
            batch = [r for r in batch if r.due.service_id in incidents]
            if not batch:
                return []
            rows, recoveries = _metric_rows(batch, incidents)
            table = UptimeMetric.__table__  # type: ignore[attr-defined]
            stored = session.execute(
                insert(table)
                .on_conflict_do_nothing(constraint="uq_uptime_metrics_service_scheduled")
                .returning(table.c.service_id, table.c.scheduled_at),
                rows,
            )
            inserted = {(sid, at) for sid, at in stored}
            batch = [r for r in batch if (r.due.service_id, r.scheduled_at) in inserted]
            if not batch:
                return []
            session.execute(UPDATE_STATE, [_state_row(r) for r in batch])
            rollups.add_results(session.connection(), inserted)
            for r in batch:
                if r.after.status != r.before.status:
                    publish(session, _status_event(r))
            for r, incident_id in recoveries:
                if (r.due.service_id, r.scheduled_at) in inserted:
                    record_recovery(session, r, incident_id)
            for r in batch:  # after the outages' recoveries: a slow spell that became an outage ended with it
                record_spell_end(session, r)
            return batch

    def link(self, outage: Outage, incident_id: int) -> None:
        """The outage's incident, on its state and on its failed checks (unless the outage is over)."""
        with self.engine.begin() as conn:
            conn.execute(
                SET_INCIDENT, {"service_id": outage.service_id, "episode": outage.episode, "incident_id": incident_id}
            )

    def prune_batch(self, cutoff: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(PRUNE, {"cutoff": cutoff, "batch": PRUNE_BATCH}).rowcount

    def prune_rollups_batch(self, resolution: str, cutoff: datetime) -> int:
        with self.engine.begin() as conn:
            return rollups.prune_batch(conn, resolution, cutoff, PRUNE_BATCH)


def _metric_rows(
    batch: list[Result], incidents: dict[int, int | None]
) -> tuple[list[dict[str, Any]], list[tuple[Result, int]]]:
    """The `uptime_metrics` rows of the results, and the recoveries among them with the incident each ends."""
    rows = []
    recoveries: list[tuple[Result, int]] = []
    current = dict(incidents)
    for r in batch:  # in the order checked: a recovery ends the outage's incident for the results after it
        incident_id = current[r.due.service_id]
        rows.append({
            "service_id": r.due.service_id,
            "scheduled_at": r.scheduled_at,
            "checked_at": r.checked_at,
            "status": r.status,
            "response_time_ms": r.outcome.latency_ms if r.outcome else None,
            "status_code": r.outcome.status_code if r.outcome else None,
            "error": _short(r.error_text),
            "error_kind": r.error_kind,
            # A result during an outage (its recovery included) belongs to the outage's incident.
            "incident_id": incident_id if r.before.status == "down" else None,
        })  # fmt: skip
        if r.transition == "recovered" and incident_id is not None:
            recoveries.append((r, incident_id))
        if r.transition is not None:
            current[r.due.service_id] = None
    return rows, recoveries


def _status_event(r: Result) -> Event:
    """A service's status changed (services pages refresh on it: live-service)."""
    return Event(
        kind="service.status",
        data={"name": r.due.name, "service_id": r.due.service_id, "status": r.after.status,
              "previous": r.before.status, "at": r.checked_at.isoformat()},
    )  # fmt: skip


def _state_row(r: Result) -> dict[str, Any]:
    return {
        "service_id": r.due.service_id,
        "status": r.after.status,
        "consecutive_failures": r.after.consecutive_failures,
        "consecutive_passes": r.after.consecutive_passes,
        "episode": r.after.episode,
        "failing_since": r.after.failing_since,
        "clear_incident": r.transition is not None,
        "next_check_at": r.next_check_at,
        "checked_at": r.checked_at,
        "last_error": _short(r.error_text),
    }


def _windows(conn: Connection, until: datetime) -> list[Window]:
    """Maintenance windows that hold at some time before `until` and have not ended."""
    rows = conn.execute(
        select(MaintenanceWindow.service, MaintenanceWindow.starts_at, MaintenanceWindow.ends_at).where(
            col(MaintenanceWindow.ends_at) > utcnow(), col(MaintenanceWindow.starts_at) < until
        )
    ).all()
    return [Window(*w) for w in rows]


def _short(text_: str | None) -> str | None:
    return None if text_ is None else text_[:ERROR_MAX]
