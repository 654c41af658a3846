"""Scheduled monitoring's activities: `check_due_services` (a tick of a ServiceMonitorWorkflow) and pruning.

A tick covers the next MONITOR_WINDOW_SECONDS. It loads its shard's enabled services due in that window, then runs
each service's check at the time it is due (again, if its interval is shorter than the window), at most
MONITOR_CONCURRENCY at once, in this one event loop: a thousand services cost one activity per window, not a
workflow task per check. When checks are still in flight at the window's end (a service hanging until its timeout),
the tick does not wait for them: it loads the next window and goes on beside them, and ends at the first window's
end with nothing in flight (or after TICK_MAX_SECONDS). Every half second the results so far are written in one
transaction: the `uptime_metrics` rows, each service's `service_states` row (core/monitoring.py: advance), and the
recoveries recorded on their incidents. An outage (failure_threshold failures in a row) then opens an incident
through the same path as the API (services/incidents/open.py) under the key `service:<id>:<episode>` — or joins the
open incident of the same service and type — and starts its playbook.

Retries are safe: results are unique per (service, scheduled time), a state moves on only with its result, an
outage whose incident did not open yet (`down`, no incident) is opened by the next attempt or tick under the same
key, and the IncidentWorkflow's id is the incident's.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session, col, select
from temporalio import activity

from activities.checks import CheckOutcome, run_check
from activities.heartbeat import beat
from core.audit import Actor
from core.conversations import append_tool_message
from core.db import session_scope
from core.events import incident_event
from core.monitoring import (
    ERROR_MAX,
    MaintenanceWindow,
    Thresholds,
    Tracked,
    UptimeMetric,
    advance,
    episode_key,
    next_due,
    spread,
)
from core.opening import OpenIncident
from core.payloads import CHECK_DUE_SERVICES, PRUNE_UPTIME, MonitorTick, MonitorTickResult
from core.services import HttpCheck, ServiceBase
from core.settings import Settings
from core.tables import ENDED_STATUSES, Event, Incident, IncidentCreate, utcnow

log = logging.getLogger(__name__)

MONITOR = Actor(user_id=None, name="monitor", kind="system")
FLUSH_SECONDS = 0.5
PRUNE_BATCH = 10_000
# A tick rolls on into further windows while checks are in flight at a window's end, for at most this long (within
# the workflow's start-to-close timeout of 10 minutes, with room for the slowest check: 120 s).
TICK_MAX_SECONDS = 300.0
DRAIN_SECONDS = 150.0
T = TypeVar("T")


@dataclass
class Due:
    service_id: int
    name: str
    config: ServiceBase
    state: Tracked
    next_check_at: datetime


@dataclass
class Result:
    due: Due
    scheduled_at: datetime
    checked_at: datetime
    status: str
    outcome: CheckOutcome | None
    error: str | None
    before: Tracked
    after: Tracked
    transition: str | None
    next_check_at: datetime

    @property
    def timed_out(self) -> bool:
        return self.outcome is None and (self.error or "").startswith("no answer within")

    @property
    def error_text(self) -> str | None:
        """Why the check failed (or warned), if it did."""
        return self.error or (self.outcome.error if self.outcome else None)


@dataclass(frozen=True)
class Window:
    service: str | None
    starts_at: datetime
    ends_at: datetime

    def covers(self, service: str, at: datetime) -> bool:
        return (self.service is None or self.service == service) and self.starts_at <= at < self.ends_at


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

PENDING_OUTAGES = text("""
SELECT s.id, s.name, s.config, st.episode, st.failing_since, st.last_error
FROM services s JOIN service_states st ON st.service_id = s.id
WHERE s.enabled AND s.id % :shards = :shard AND st.status = 'down' AND st.incident_id IS NULL
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


def _seconds_until(at: datetime) -> float:
    return max(0.0, (at - utcnow()).total_seconds())


def _p99(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def _short(text_: str | None) -> str | None:
    return None if text_ is None else text_[:ERROR_MAX]


class MonitorActivities:
    """The tick activity with what it needs: the database, the guarded HTTP client checks go through, settings, and
    the incident opener (core/opening.py)."""

    def __init__(
        self, engine: Engine, http: httpx.AsyncClient, settings: Settings, *, open_incident: OpenIncident
    ) -> None:
        self.engine = engine
        self.http = http
        self.settings = settings
        self.open_incident = open_incident  # services/incidents/open.py, handed in by the worker

    def all(self) -> list[Callable[..., Any]]:
        return [self.check_due_services, self.prune_uptime_metrics]

    @activity.defn(name=PRUNE_UPTIME)
    async def prune_uptime_metrics(self) -> int:
        """Delete check results older than UPTIME_RETENTION_DAYS, a batch per transaction; how many went."""
        cutoff = utcnow() - timedelta(days=self.settings.uptime_retention_days)
        deleted = 0
        while True:
            count = await self._db(self._prune_batch, cutoff)
            deleted += count
            beat(deleted)
            if count < PRUNE_BATCH:
                return deleted

    def _prune_batch(self, cutoff: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(PRUNE, {"cutoff": cutoff, "batch": PRUNE_BATCH}).rowcount

    async def _db(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(work, *args)

    @activity.defn(name=CHECK_DUE_SERVICES)
    async def check_due_services(self, tick: MonitorTick) -> MonitorTickResult:  # noqa: C901 (the window loop; issue 18 splits it into a TickRun)
        window = self.settings.monitor_window_seconds
        started = utcnow()
        result = MonitorTickResult(window_seconds=window)
        # Outages an earlier attempt or tick saw but could not open an incident for (Temporal was away…).
        pending_outages, windows_now = await self._db(self._pending_outages, tick)
        for pending in pending_outages:
            if (incident_id := await self._open_safely(*pending, windows_now)) is not None:
                result.incidents.append(incident_id)
        results: list[Result] = []
        lags: list[float] = []
        gate = asyncio.Semaphore(self.settings.monitor_concurrency)
        inflight: dict[int, asyncio.Task[None]] = {}
        known: dict[int, Due] = {}  # every service this tick checked, as it stands now
        failures: list[BaseException] = []

        async def watch(item: Due, until: datetime, windows: list[Window]) -> None:
            while item.next_check_at < until:
                scheduled = item.next_check_at
                await asyncio.sleep(_seconds_until(scheduled))
                if any(w.covers(item.name, scheduled) for w in windows):
                    result.silenced += 1
                    item.next_check_at = next_due(scheduled, item.config.interval_seconds, utcnow(), item.service_id)
                    await self._db(self._skip, item)
                    continue
                async with gate:
                    checked_at = utcnow()
                    lags.append((checked_at - scheduled).total_seconds() * 1000)
                    outcome, error = await self._check(item.config)
                status = outcome.status if outcome is not None and outcome.status else "down"
                if outcome is not None and not outcome.healthy:
                    status = "down"
                limits = Thresholds(item.config.failure_threshold, item.config.recovery_threshold)
                after, transition = advance(item.state, status, checked_at, limits)  # type: ignore[arg-type]
                item.next_check_at = next_due(scheduled, item.config.interval_seconds, utcnow(), item.service_id)
                results.append(
                    Result(item, scheduled, checked_at, status, outcome, error, item.state, after, transition,
                           item.next_check_at)
                )  # fmt: skip
                item.state = after

        def finished(service_id: int) -> Callable[[asyncio.Task[None]], None]:
            def done(task: asyncio.Task[None]) -> None:
                inflight.pop(service_id, None)
                if not task.cancelled() and (err := task.exception()) is not None:
                    failures.append(err)

            return done

        async def flush(windows: list[Window]) -> None:
            batch, results[:] = results[:], []
            if batch:
                await self._record(batch, result, windows)
            beat(result.checked)

        # Windows follow one another in this one activity while checks are still running at a window's end (a
        # slow service near its timeout): the next window's checks start on time beside them, and a service in
        # flight is not loaded again. The tick ends at the first window's end with nothing in flight, or after
        # TICK_MAX_SECONDS, when what still runs is awaited.
        until, windows = started, list[Window]()
        try:
            while True:
                until += timedelta(seconds=window)
                await flush(windows)
                loaded, windows = await self._db(self._load, tick, until)
                for item in loaded:
                    if item.service_id in inflight:  # still being checked, from the window before
                        continue
                    if (seen := known.get(item.service_id)) is not None:
                        # This activity is the state's only writer, and its memory is ahead of what it flushed.
                        item.state, item.next_check_at = seen.state, seen.next_check_at
                        if item.next_check_at >= until:
                            continue
                    known[item.service_id] = item
                    task = asyncio.create_task(watch(item, until, windows))
                    inflight[item.service_id] = task
                    task.add_done_callback(finished(item.service_id))
                while (left := _seconds_until(until)) > 0 and not failures:
                    if inflight:
                        await asyncio.wait(list(inflight.values()), timeout=min(FLUSH_SECONDS, left))
                    else:
                        await asyncio.sleep(min(FLUSH_SECONDS, left))
                    await flush(windows)
                if failures:
                    raise failures[0]
                if not inflight or (until - started).total_seconds() + window > TICK_MAX_SECONDS:
                    break
            # What still runs gets DRAIN_SECONDS (the slowest check's timeout and then some); what is left after
            # that (every target hanging at once, queued behind the gate) is cancelled and checked next tick.
            drain_until = utcnow() + timedelta(seconds=DRAIN_SECONDS)
            while inflight and not failures and _seconds_until(drain_until) > 0:
                await asyncio.wait(list(inflight.values()), timeout=FLUSH_SECONDS)
                await flush(windows)
            await flush(windows)
            if failures:
                raise failures[0]
        finally:
            for task in list(inflight.values()):
                task.cancel()
            if results:  # cancelled (the worker is stopping) or failed: keep what was checked
                await asyncio.shield(self._record(list(results), result, windows))
        result.lag_p99_ms = round(_p99(lags), 1)
        return result

    async def _check(self, config: ServiceBase) -> tuple[CheckOutcome | None, str | None]:
        check = config.check.model_dump(mode="json")
        try:
            # The check's own timeout bounds it; this one also bounds what it does not (a slow DNS lookup).
            async with asyncio.timeout(config.timeout_seconds + 1):
                return await run_check(self.http, check, timeout=config.timeout_seconds), None
        except TimeoutError:
            return None, f"no answer within {config.timeout_seconds:g}s"
        except ValueError as err:
            return None, str(err)

    def _load(self, tick: MonitorTick, until: datetime) -> tuple[list[Due], list[Window]]:
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

    def _pending_outages(
        self, tick: MonitorTick
    ) -> tuple[list[tuple[int, str, ServiceBase, int, datetime, str | None]], list[Window]]:
        """Outages without an incident yet, and the maintenance windows holding now."""
        with self.engine.begin() as conn:
            conn.execute(FORGET_STALE_OUTAGES, {"shard": tick.shard, "shards": tick.shards})
            rows = conn.execute(PENDING_OUTAGES, {"shard": tick.shard, "shards": tick.shards}).all()
            windows = _windows(conn, utcnow())
        pending = []
        for sid, name, config, episode, since, error in rows:
            try:
                pending.append((sid, name, ServiceBase.model_validate(config), episode, since, error))
            except ValidationError:
                continue
        return pending, windows

    def _skip(self, item: Due) -> None:
        with self.engine.begin() as conn:
            conn.execute(SKIP_SILENCED, {"service_id": item.service_id, "next_check_at": item.next_check_at})

    async def _record(self, batch: list[Result], totals: MonitorTickResult, windows: list[Window]) -> None:
        """Write a batch of results, then open the incidents of the outages among them."""
        stored = await self._db(self._write, batch)
        for r in stored:
            totals.checked += 1
            totals.down += r.status == "down"
            totals.recovered += r.transition == "recovered"
        for r in stored:
            if r.transition == "outage":
                totals.outages += 1
                outage = (r.due.service_id, r.due.name, r.due.config, r.after.episode, r.after.failing_since)
                if (incident_id := await self._open_safely(*outage, r.error_text, windows)) is not None:
                    totals.incidents.append(incident_id)

    async def _open_safely(self, *outage: Any) -> int | None:
        """_open_incident, but one outage that cannot open (Temporal away, a conflict) does not stop the others'
        checks: it stays `down` with no incident, and the next tick opens it."""
        beat("opening an incident")
        try:
            return await self._open_incident(*outage)
        except Exception:
            log.exception("cannot open the incident of %s's outage %s yet; the next tick tries again", *outage[1:4:2])
            return None

    def _write(self, batch: list[Result]) -> list[Result]:
        """Store the results and move the states on; the results stored (not those of a service deleted meanwhile,
        nor those another attempt of this tick stored already)."""
        with session_scope(self.engine) as session:
            ids = sorted({r.due.service_id for r in batch})
            alive = set(session.execute(LOCK_SERVICES, {"ids": ids}).scalars())
            incidents: dict[int, int | None] = dict(session.execute(LOCK_STATES, {"ids": sorted(alive)}).all())
            batch = [r for r in batch if r.due.service_id in incidents]
            if not batch:
                return []
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
                    "error_kind": r.outcome.error_kind if r.outcome else ("timeout" if r.timed_out else "invalid_check")
                    if r.error else None,
                    # A result during an outage (its recovery included) belongs to the outage's incident.
                    "incident_id": incident_id if r.before.status == "down" else None,
                })  # fmt: skip
                if r.transition == "recovered" and incident_id is not None:
                    recoveries.append((r, incident_id))
                if r.transition is not None:
                    current[r.due.service_id] = None
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
            session.execute(
                UPDATE_STATE,
                [
                    {
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
                    for r in batch
                ],
            )
            for r, incident_id in recoveries:
                if (r.due.service_id, r.scheduled_at) in inserted:
                    self._record_recovery(session, r, incident_id)
            return batch

    def _record_recovery(self, session: Session, r: Result, incident_id: int) -> None:
        incident = session.get(Incident, incident_id)
        if incident is None:
            return
        since = r.before.failing_since
        lasted = f" after {_duration(r.checked_at - since)}" if since else ""
        incident_event(
            session,
            kind="incident.service_recovered",
            incident_id=incident_id,
            actor=MONITOR.name,
            service=r.due.name,
            status=r.status,
            checks_passed=r.after.consecutive_passes,
            down_since=since.isoformat() if since else None,
        )
        append_tool_message(
            session,
            incident_id=incident_id,
            workflow_id=incident.workflow_id,
            content=(
                f"monitor: {r.due.name} recovered at {r.checked_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC{lasted}: "
                f"{r.after.consecutive_passes} check(s) in a row passed ({r.status}"
                + (f", {r.outcome.latency_ms:g} ms" if r.outcome and r.outcome.latency_ms is not None else "")
                + ")."
            ),
            actor=MONITOR.name,
            meta={"service": r.due.name, "monitor": "recovered"},
        )

    async def _open_incident(
        self,
        service_id: int,
        name: str,
        config: ServiceBase,
        episode: int,
        since: datetime | None,
        error: str | None,
        windows: list[Window],
    ) -> int | None:
        """Open (or join) the outage's incident and start its playbook; None while a maintenance window holds.

        Opened through the one incident opener (services/incidents/open.py), keyed by the outage: a retried attempt
        finds its incident again and starts its playbook if it did not run yet. A joined incident's playbook is its
        opener's business."""
        now = utcnow()
        if any(w.covers(name, now) for w in windows):
            return None
        detail = _down_detail(name, config, since, error)
        opened = await self.open_incident(
            engine=self.engine,
            temporal=activity.client(),
            settings=self.settings,
            data=IncidentCreate(
                title=f"{name} is down",
                description=detail,
                service=name,
                service_url=config.check.url if isinstance(config.check, HttpCheck) else None,
                severity=config.severity,
                incident_type=config.incident_type,
                playbook_id=config.default_playbook,
            ),
            actor=MONITOR,
            idempotency_key=episode_key(service_id, episode),
            playbook_fallback=True,  # a playbook removed since the service named it: the type's playbook runs
            join=lambda session: self.join_open_incident(session, service_id, name, config, episode, detail),
            on_created=lambda session, incident: _down_message(session, incident, detail, name, episode),
        )
        assert opened.incident.id is not None
        await self._db(self._link, service_id, episode, opened.incident.id)
        return opened.incident.id

    def join_open_incident(
        self, session: Session, service_id: int, name: str, config: ServiceBase, episode: int, detail: str
    ) -> Incident | None:
        """The service's incident someone already opened (an alert, a person), which this outage joins (announced
        once, also when a retried attempt joins again); None when this outage's own incident exists or none is open."""
        key = episode_key(service_id, episode)
        if session.exec(select(Incident.id).where(Incident.idempotency_key == key)).first() is not None:
            return None  # ours, from an earlier attempt: the opener finds it by its key
        existing = session.exec(
            select(Incident)
            .where(
                Incident.service == name,
                Incident.incident_type == config.incident_type,
                col(Incident.status).not_in(ENDED_STATUSES),
            )
            .order_by(col(Incident.id).desc())
        ).first()
        if existing is None:
            return None
        assert existing.id is not None
        joined = session.exec(  # by an earlier attempt of this tick, whose link did not land
            select(Event.id).where(
                Event.incident_id == existing.id,
                Event.kind == "incident.service_down",
                col(Event.data)["service_id"].as_integer() == service_id,
                col(Event.data)["episode"].as_integer() == episode,
            )
        ).first()
        if joined is None:
            incident_event(
                session, kind="incident.service_down", incident_id=existing.id, actor=MONITOR.name,
                service=name, service_id=service_id, episode=episode,
            )  # fmt: skip
            _down_message(session, existing, detail, name, episode)
            session.commit()
        return existing

    def _link(self, service_id: int, episode: int, incident_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(SET_INCIDENT, {"service_id": service_id, "episode": episode, "incident_id": incident_id})


def _down_detail(name: str, config: ServiceBase, since: datetime | None, error: str | None) -> str:
    return (
        f"monitor: {name} failed {config.failure_threshold} check(s) in a row"
        + (f" since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if since else "")
        + f" ({_target(config)})"
        + (f": {error}" if error else "")
    )


def _down_message(session: Session, incident: Incident, detail: str, service: str, episode: int) -> None:
    """What the monitor saw, for the incident's agents (a `tool` message of its conversation)."""
    assert incident.id is not None
    append_tool_message(
        session, incident_id=incident.id, workflow_id=incident.workflow_id, content=detail, actor=MONITOR.name,
        meta={"service": service, "monitor": "down", "episode": episode},
    )  # fmt: skip


def _windows(conn: Connection, until: datetime) -> list[Window]:
    """Maintenance windows that hold at some time before `until` and have not ended."""
    rows = conn.execute(
        select(MaintenanceWindow.service, MaintenanceWindow.starts_at, MaintenanceWindow.ends_at).where(
            col(MaintenanceWindow.ends_at) > utcnow(), col(MaintenanceWindow.starts_at) < until
        )
    ).all()
    return [Window(*w) for w in rows]


def _target(config: ServiceBase) -> str:
    check = config.check
    if isinstance(check, HttpCheck):
        return check.url
    return f"tcp {check.host}:{check.port}" if check.type == "tcp" else f"dns {check.name}"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
