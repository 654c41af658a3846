"""One attempt of a monitor's tick (`check_due_services`): a TickRun holds what its windows share.

The tick loads the services due in the next window and watches each: its check runs at the second it is due (again
if its interval is shorter than the window), at most MONITOR_CONCURRENCY at once. Every half second the results so
far are flushed: stored with the states they move on, then the outages among them opened (and the slow spells grown
long enough to open theirs: degraded.py). When checks are still in flight at a window's end (a service hanging until
its timeout), the run loads the next window and goes on beside them; it ends at the first window's end with nothing
in flight, or after TICK_MAX_SECONDS.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
from temporalio import activity

from activities.checks import CheckOutcome, run_check
from activities.heartbeat import beat
from activities.monitoring.degraded import DegradedOpener, slow_candidate
from activities.monitoring.outages import OutageOpener
from activities.monitoring.rows import Due, Outage, Result, Window, in_maintenance
from activities.monitoring.store import MonitorStore
from activities.monitoring.threads import in_monitor_thread
from core.metrics import observe_check, observe_tick
from core.monitoring import Thresholds, advance, next_due
from core.payloads import MonitorTick, MonitorTickResult
from core.services import ServiceBase
from core.settings import Settings
from core.tables import utcnow

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
# A tick rolls on into further windows while checks are in flight at a window's end, for at most this long (within
# the workflow's start-to-close timeout of 10 minutes, with room for the slowest check: 120 s).
TICK_MAX_SECONDS = 300.0
DRAIN_SECONDS = 150.0


class TickRun:
    """One attempt of a tick: its checks in flight, the results not flushed yet, and its totals."""

    def __init__(
        self, tick: MonitorTick, *, store: MonitorStore, opener: OutageOpener, degraded: DegradedOpener,
        http: httpx.AsyncClient, settings: Settings,
    ) -> None:  # fmt: skip
        self.tick = tick
        self.store = store
        self.opener = opener
        self.degraded = degraded
        self.http = http
        self.window = settings.monitor_window_seconds
        self.result = MonitorTickResult(window_seconds=self.window)
        self.gate = asyncio.Semaphore(settings.monitor_concurrency)
        self.results: list[Result] = []  # checked, not flushed yet
        self.lags: list[float] = []  # ms from each check's due time to its start
        self.inflight: dict[int, asyncio.Task[None]] = {}  # by service id: its watch, while it runs
        # Services loaded again by a later window while their watch was still running (a check in flight at the
        # window's end): when that watch ends, the service goes on in the later window, with what it loaded.
        self.handover: dict[int, tuple[Due, datetime, list[Window]]] = {}
        self.known: dict[int, Due] = {}  # every service this tick checked, as it stands now
        self.failures: list[BaseException] = []  # of watches: the first ends the tick
        self.windows: list[Window] = []  # the maintenance windows of the last load
        self.closing = False  # run() is ending: no watch starts any more

    async def run(self) -> MonitorTickResult:
        started = utcnow()
        # Outages an earlier attempt or tick saw but could not open an incident for (Temporal was away…).
        pending, windows_now = await in_monitor_thread(self.store.pending_outages, self.tick)
        for outage in pending:
            await self._open(outage, windows_now)
        try:
            await self._roll(started)
            if not _worker_stopping():
                await self._drain()
        finally:
            self.closing = True
            for task in list(self.inflight.values()):
                task.cancel()
            if self.results:  # cancelled (the worker is stopping) or failed: keep what was checked
                await asyncio.shield(self._record(list(self.results), self.windows))
        self.result.lag_p99_ms = round(_p99(self.lags), 1)
        observe_tick(self.result)
        return self.result

    async def _roll(self, started: datetime) -> None:
        """Windows follow one another in this one activity while checks are still running at a window's end (a slow
        service near its timeout): the next window's checks start on time beside them, and a service in flight goes
        on in the window that loaded it as soon as its check ends (_finished). The run goes on to the drain at the
        first window's end with nothing in flight, or after TICK_MAX_SECONDS."""
        until = started
        while True:
            until += timedelta(seconds=self.window)
            await self._flush()
            loaded, self.windows = await in_monitor_thread(self.store.load, self.tick, until)
            self._watch_all(loaded, until, self.windows)
            while (left := _seconds_until(until)) > 0 and not self.failures and not _worker_stopping():
                if self.inflight:
                    await asyncio.wait(list(self.inflight.values()), timeout=min(FLUSH_SECONDS, left))
                else:
                    await asyncio.sleep(min(FLUSH_SECONDS, left))
                await self._flush()
            self._raise_failure()
            if _worker_stopping():
                # Its checks not done yet are cancelled (run()): they were not stored, so they are still due, and the
                # next tick, on whichever worker polls it, checks them. Waiting for the window would hold up the
                # worker's stop (and every restart for an agent install) by up to MONITOR_WINDOW_SECONDS.
                log.info("worker stopping: the monitor tick ends early, its remaining checks go to the next tick")
                return
            if not self.inflight or (until - started).total_seconds() + self.window > TICK_MAX_SECONDS:
                return

    async def _drain(self) -> None:
        """What still runs gets DRAIN_SECONDS (the slowest check's timeout and then some); what is left after that
        (every target hanging at once, queued behind the gate) is cancelled and checked next tick."""
        drain_until = utcnow() + timedelta(seconds=DRAIN_SECONDS)
        while self.inflight and not self.failures and _seconds_until(drain_until) > 0:
            await asyncio.wait(list(self.inflight.values()), timeout=FLUSH_SECONDS)
            await self._flush()
        await self._flush()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failures:
            raise self.failures[0]

    def _watch_all(self, loaded: list[Due], until: datetime, windows: list[Window]) -> None:
        for item in loaded:
            if item.service_id in self.inflight:  # still being checked, from the window before: it goes on after
                self.handover[item.service_id] = (item, until, windows)
                continue
            self._watch_from(item, until, windows)

    def _watch_from(self, item: Due, until: datetime, windows: list[Window]) -> None:
        """Watch the loaded service up to `until`, from where this tick's memory has it if it checked it before."""
        if (seen := self.known.get(item.service_id)) is not None:
            # This activity is the state's only writer, and its memory is ahead of what it flushed.
            item.state, item.next_check_at = seen.state, seen.next_check_at
            if item.next_check_at >= until:
                return
        self.known[item.service_id] = item
        task = asyncio.create_task(self._watch(item, until, windows))
        self.inflight[item.service_id] = task
        task.add_done_callback(functools.partial(self._finished, item.service_id))

    def _finished(self, service_id: int, task: asyncio.Task[None]) -> None:
        self.inflight.pop(service_id, None)
        later = self.handover.pop(service_id, None)
        if task.cancelled():
            return
        if (err := task.exception()) is not None:
            self.failures.append(err)
        elif later is not None and not self.closing and not _worker_stopping():
            # Its check overlapped the end of the window it was watched in, and a later window loaded it meanwhile:
            # its checks due there start now, on time, rather than a window late.
            self._watch_from(*later)

    async def _watch(self, item: Due, until: datetime, windows: list[Window]) -> None:
        """The service's checks due before `until`, each at its time."""
        while item.next_check_at < until:
            scheduled = item.next_check_at
            await asyncio.sleep(_seconds_until(scheduled))
            if in_maintenance(windows, item.name, scheduled):
                self.result.silenced += 1
                item.next_check_at = next_due(scheduled, item.config.interval_seconds, utcnow(), item.service_id)
                await in_monitor_thread(self.store.skip, item, scheduled)
                continue
            await self._check(item, scheduled)

    async def _check(self, item: Due, scheduled: datetime) -> None:
        """One check of the service, its result kept for the next flush and its state moved on in memory."""
        async with self.gate:
            checked_at = utcnow()
            self.lags.append((checked_at - scheduled).total_seconds() * 1000)
            outcome, error = await check_service(self.http, item.config)
        status = outcome.status if outcome is not None and outcome.status else "down"
        if outcome is not None and not outcome.healthy:
            status = "down"
        slow = slowness(item.config, outcome) if status == "up" else None
        if slow is not None:
            status, error = "degraded", slow
        observe_check(status, (checked_at - scheduled).total_seconds())
        limits = Thresholds(item.config.failure_threshold, item.config.recovery_threshold)
        after, transition = advance(item.state, status, checked_at, limits)  # type: ignore[arg-type]
        item.next_check_at = next_due(scheduled, item.config.interval_seconds, utcnow(), item.service_id)
        self.results.append(
            Result(item, scheduled, checked_at, status, outcome, error, item.state, after, transition,
                   item.next_check_at)
        )  # fmt: skip
        item.state = after

    async def _flush(self) -> None:
        batch, self.results = self.results, []
        if batch:
            await self._record(batch, self.windows)
        beat(self.result.checked)

    async def _record(self, batch: list[Result], windows: list[Window]) -> None:
        """Write a batch of results, then open the incidents of the outages among them."""
        stored = await in_monitor_thread(self.store.write, batch)
        for r in stored:
            self.result.checked += 1
            self.result.down += r.status == "down"
            self.result.recovered += r.transition == "recovered"
        for r in stored:
            if r.transition == "outage":
                self.result.outages += 1
                await self._open(r.outage(), windows)
        for r in stored:
            if slow_candidate(r):
                await self._open_spell(r, windows)

    async def _open(self, outage: Outage, windows: list[Window]) -> None:
        """Open (or join) the outage's incident and link the outage to it. One outage that cannot open (Temporal
        away, a conflict) does not stop the others' checks: it stays `down` with no incident, and the next tick opens
        it."""
        beat("opening an incident")
        try:
            incident_id = await self.opener.open(outage, windows)
            if incident_id is not None:
                await in_monitor_thread(self.store.link, outage, incident_id)
        except Exception:
            log.exception(
                "cannot open the incident of %s's outage %s yet; the next tick tries again", outage.name, outage.episode
            )
            return
        if incident_id is not None:
            self.result.incidents.append(incident_id)

    async def _open_spell(self, r: Result, windows: list[Window]) -> None:
        """Open (or join, or reopen) the incident of the slow spell this result makes long enough; like an outage's,
        one that cannot open yet is opened at the spell's next slow check."""
        try:
            spell = await self.degraded.pending(r)
            if spell is None:
                return
            beat("opening a slow spell's incident")
            incident_id = await self.degraded.open(spell, windows)
        except Exception:
            log.exception(
                "cannot open the incident of %s's slow spell yet; its next slow check tries again", r.due.name
            )
            return
        if incident_id is not None:
            self.result.incidents.append(incident_id)


async def check_service(http: httpx.AsyncClient, config: ServiceBase) -> tuple[CheckOutcome | None, str | None]:
    """The check's outcome, or why there is none (no answer in time, a check that is not valid)."""
    check = config.check.model_dump(mode="json")
    try:
        # The check's own timeout bounds it; this one also bounds what it does not (a slow DNS lookup).
        async with asyncio.timeout(config.timeout_seconds + 1):
            return await run_check(http, check, timeout=config.timeout_seconds), None
    except TimeoutError:
        return None, f"no answer within {config.timeout_seconds:g}s"
    except ValueError as err:
        return None, str(err)


def slowness(config: ServiceBase, outcome: CheckOutcome | None) -> str | None:
    """Why a passing check is `degraded` for being slow (None: fast enough)."""
    if outcome is None or outcome.latency_ms is None or outcome.latency_ms <= config.degraded_above_ms:
        return None
    return f"slow: answered in {outcome.latency_ms:g} ms (degraded above {config.degraded_above_ms:g} ms)"


def _worker_stopping() -> bool:
    """The worker running this activity is shutting down (TickRun also runs outside an activity, in tests)."""
    return activity.in_activity() and activity.is_worker_shutdown()


def _seconds_until(at: datetime) -> float:
    return max(0.0, (at - utcnow()).total_seconds())


def _p99(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
