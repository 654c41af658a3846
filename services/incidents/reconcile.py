"""The reconciler: an incident recorded while Temporal could not start its workflow gets it once Temporal is back.

Opening stores the incident row first, then starts its run (services/incidents/open.py, services/alerts.py, a
reopen). When that start fails the opener answers 503 and the row is left behind: it is its own outbox record, and
the worker drains it (worker/runner.py runs `reconcile_forever` every RECONCILE_INTERVAL_SECONDS, and once at
start-up).

Which incidents: not ended (open, in_progress, reopened), whose current run (`incidents.workflow_id`) has no
`workflows` row, last changed more than RECONCILE_GRACE ago (an opener's start may take START_WORKFLOW_TIMEOUT to
succeed or fail). The `workflows` row is the run's "sent" mark: the projection writes it with the run's first step;
the reconciler writes a `pending` one (seq -1, which any projection write supersedes) as soon as it knows Temporal
has the run, so an incident whose workers are behind is asked about once, not at every round.

Safety: starting an id Temporal already has is success (REJECT_DUPLICATE), so reconcilers in N workers and a
client's retry start each run once. A start happens under the incident's row lock (FOR UPDATE SKIP LOCKED, the
criterion checked again) and only if writing the run's mark wrote a row (the claim's snapshot predates its lock, so
a start committed in between is seen by the mark only): two reconcilers never both start one run, and neither says
it started a run it did not.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, exists, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.audit import SYSTEM
from core.metrics import INCIDENTS_RECONCILED
from core.payloads import incident_workflow_id
from core.settings import Settings
from core.tables import ENDED_STATUSES, INCIDENT_TRANSITIONS, Incident, WorkflowRun, utcnow
from services.incidents.lifecycle import Transition, act_on_playbook
from services.incidents.start import (
    CLOCK_SKEW,
    START_WORKFLOW_TIMEOUT,
    WorkflowConflict,
    pin,
    start_failure,
    start_incident_workflow,
)

log = logging.getLogger(__name__)

# An incident changed more recently than this may still have its opener's start in flight.
RECONCILE_GRACE = START_WORKFLOW_TIMEOUT + CLOCK_SKEW
RECONCILE_BATCH = 100  # incidents per round; a full round that made progress is followed at once by the next
# Starts in flight at once, each holding a database connection: on 2 cores about 200 ms each one at a time.
RECONCILE_CONCURRENCY = 4
BACKOFF_MAX_SECONDS = 15.0  # while Temporal (or Postgres) stays unavailable, rounds are spaced up to this
DESCRIBE_TIMEOUT = timedelta(seconds=5)
ACTIVE_STATUSES = tuple(status for status in INCIDENT_TRANSITIONS if status not in ENDED_STATUSES)

# Not ended, pointing at a run without a workflows row, last changed before the cutoff; oldest first. The incidents
# come from ix_incidents_status (open ones are few), each run is looked up by the workflows primary key: the LATERAL
# subquery with LIMIT keeps the planner from a hash anti-join, which read every workflows row of history: with
# 200,000 runs and 1,000 open incidents, 197 ms every round in every worker, against 4.5 ms for the probes.
_ORPHANS = text(
    """
SELECT i.id, i.workflow_id, i.workflow_runs, i.created_at, i.updated_at
FROM incidents AS i
LEFT JOIN LATERAL (SELECT 1 AS found FROM workflows AS w WHERE w.workflow_id = i.workflow_id LIMIT 1) AS run ON true
WHERE i.status = ANY(CAST(:statuses AS varchar[])) AND i.workflow_id IS NOT NULL AND i.updated_at < :cutoff
  AND run.found IS NULL AND NOT (i.workflow_id = ANY(CAST(:refused AS varchar[])))
ORDER BY i.id
LIMIT :batch
"""
)
# The run's "sent" mark, taken from the incident row itself (only while it still points at that run).
_MARK_STARTED = text(
    """
INSERT INTO workflows (workflow_id, incident_id, playbook_id, playbook_version, status, current_steps, changes, seq,
                       updated_at)
SELECT i.workflow_id, i.id, i.playbook_id, i.playbook_version, 'pending', '[]'::jsonb, '[]'::jsonb, -1, :now
FROM incidents AS i WHERE i.id = :incident_id AND i.workflow_id = :workflow_id
ON CONFLICT (workflow_id) DO NOTHING
"""
)


@dataclass(frozen=True)
class Orphan:
    """An incident whose current run has not been seen in Temporal."""

    incident_id: int
    workflow_id: str
    workflow_runs: int
    created_at: datetime
    updated_at: datetime


@dataclass
class Round:
    """What one round did: runs it started, runs it found already in Temporal (their opener's start went through,
    their first step is not recorded yet), runs it refused (another database's history holds the id)."""

    candidates: int = 0
    started: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unavailable: str | None = None  # why Temporal could not be reached: the round stopped there

    @property
    def settled(self) -> int:
        return len(self.started) + len(self.found) + len(self.refused)


class Reconciler:
    """Starts the runs of incidents recorded while Temporal was unavailable; one per worker process."""

    def __init__(
        self,
        *,
        engine: Engine,
        temporal: Client,
        settings: Settings,
        grace: timedelta = RECONCILE_GRACE,
        batch: int = RECONCILE_BATCH,
    ) -> None:
        self._engine, self._temporal, self._settings = engine, temporal, settings
        self._grace, self.batch = grace, batch
        # Ids another database's history holds: said once, left for a person (they would fill every batch).
        self._refused: set[str] = set()

    async def reconcile(self) -> Round:
        """One round: the oldest `batch` orphans, each started (or marked as found in Temporal), a few at a time.
        Stops at the first sign that Temporal is unavailable."""
        orphans = await asyncio.to_thread(self._orphans, utcnow() - self._grace)
        result = Round(candidates=len(orphans))
        slots = asyncio.Semaphore(RECONCILE_CONCURRENCY)

        async def settle(orphan: Orphan) -> None:
            async with slots:
                if result.unavailable is not None:
                    return
                try:
                    await self._settle(orphan, result)
                except RPCError as err:
                    result.unavailable = result.unavailable or start_failure(err)
                except WorkflowConflict as err:
                    self._refused.add(orphan.workflow_id)
                    result.refused.append(orphan.workflow_id)
                    INCIDENTS_RECONCILED.labels("refused").inc()
                    log.error("incident %d: %s", orphan.incident_id, err)

        # The database failing one of them fails the round, once the others have ended.
        for outcome in await asyncio.gather(*(settle(orphan) for orphan in orphans), return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        return result

    def _orphans(self, cutoff: datetime) -> list[Orphan]:
        params = {"statuses": list(ACTIVE_STATUSES), "cutoff": cutoff, "refused": sorted(self._refused),
                  "batch": self.batch}  # fmt: skip
        with Session(self._engine) as session:
            return [Orphan(*row) for row in session.execute(_ORPHANS, params)]

    async def _settle(self, orphan: Orphan, result: Round) -> None:
        try:
            description = await self._temporal.get_workflow_handle(orphan.workflow_id).describe(
                rpc_timeout=DESCRIBE_TIMEOUT
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        else:
            # In Temporal already: its opener's start went through unseen, or its workers are behind.
            if orphan.workflow_runs == 1 and description.start_time < orphan.created_at - CLOCK_SKEW:
                raise WorkflowConflict(
                    f"workflow {orphan.workflow_id} predates the incident: it belongs to another database's history "
                    "(set WORKFLOW_ID_PREFIX to share a namespace between deployments); not started"
                )
            await asyncio.to_thread(self._mark_found, orphan)
            result.found.append(orphan.workflow_id)
            INCIDENTS_RECONCILED.labels("found").inc()
            log.debug("workflow %s of incident %d is in Temporal already", orphan.workflow_id, orphan.incident_id)
            return
        if await self._start(orphan):
            result.started.append(orphan.workflow_id)
            INCIDENTS_RECONCILED.labels("started").inc()
            what = "reopened" if orphan.workflow_runs > 1 else "recorded"
            log.info(
                "started workflow %s for incident %d, %s while Temporal was unavailable (%s ago)",
                orphan.workflow_id, orphan.incident_id, what, _ago(utcnow() - orphan.updated_at),
            )  # fmt: skip

    async def _start(self, orphan: Orphan) -> bool:
        """Start the run under the incident's row lock; False when another reconciler holds the row or it is no
        longer an orphan (resolved, reopened again, started meanwhile).

        The run's mark is written before the start and committed after it: once the start is sent this transaction
        waits on no lock, so the run's first projection write (which waits for the incident's row and the mark)
        cannot deadlock with it, and a start that fails leaves no mark."""
        session = Session(self._engine, expire_on_commit=False)
        try:
            incident = await asyncio.to_thread(self._claim, session, orphan)
            if incident is None:
                return False
            settings = self._settings
            if not await asyncio.to_thread(self._mark, session, orphan):
                return False  # another reconciler's start committed between our claim's snapshot and its lock
            if orphan.workflow_runs > 1:
                # A reopen → restart whose start failed: end the previous run if it still runs, as the reopen would.
                moved = Transition(incident, "restart", _previous_run(incident, settings))
                await act_on_playbook(temporal=self._temporal, engine=self._engine, settings=settings, moved=moved,
                                      actor=SYSTEM)  # fmt: skip
            else:
                pinned = await asyncio.to_thread(pin, session, settings, incident, None)
                await start_incident_workflow(temporal=self._temporal, engine=self._engine, incident=incident,
                                              settings=settings, fresh=True, pinned=pinned)  # fmt: skip
            await asyncio.to_thread(session.commit)
            return True
        finally:
            session.close()  # rolls back what was not committed (the mark of a start that failed), lets go of the row

    @staticmethod
    def _claim(session: Session, orphan: Orphan) -> Incident | None:
        return session.exec(
            select(Incident)
            .where(
                Incident.id == orphan.incident_id,
                Incident.workflow_id == orphan.workflow_id,
                col(Incident.status).in_(ACTIVE_STATUSES),
                ~exists().where(col(WorkflowRun.workflow_id) == orphan.workflow_id),
            )
            .with_for_update(skip_locked=True, of=Incident)
        ).first()

    @staticmethod
    def _mark(session: Session, orphan: Orphan) -> bool:
        """Write the run's mark; False when the run has one already. The claim alone cannot tell: its snapshot is
        taken before the row lock, so a reconciler whose start committed in between (mark written, lock let go) is
        unseen by it; this statement's snapshot comes after the lock, and sees that mark."""
        written = session.execute(
            _MARK_STARTED, {"incident_id": orphan.incident_id, "workflow_id": orphan.workflow_id, "now": utcnow()}
        )
        return bool(written.rowcount)  # type: ignore[attr-defined]

    def _mark_found(self, orphan: Orphan) -> None:
        with Session(self._engine) as session:
            self._mark(session, orphan)
            session.commit()


async def reconcile_forever(reconciler: Reconciler, *, interval: float) -> None:
    """A round now and every `interval` seconds; while Temporal or Postgres is unavailable the wait doubles up to
    BACKOFF_MAX_SECONDS (what the round saw is logged), and it is `interval` again after a round that got through."""
    delay = interval
    while True:
        try:
            result = await reconciler.reconcile()
        except Exception as err:  # noqa: BLE001 - the database down, or a bug: the next round tries again
            delay = min(max(delay * 2, interval), BACKOFF_MAX_SECONDS)
            log.warning(
                "reconciling incidents failed: %s; next try in %g s", err, delay,
                exc_info=not isinstance(err, OperationalError),
            )  # fmt: skip
        else:
            if result.unavailable is not None:
                delay = min(max(delay * 2, interval), BACKOFF_MAX_SECONDS)
                waiting = result.candidates - result.settled
                log.warning(
                    "Temporal is unavailable (%s): %d incident(s) recorded meanwhile wait for their workflow%s; "
                    "next try in %g s",
                    result.unavailable, waiting, "" if waiting < reconciler.batch else " (at least)", delay,
                )  # fmt: skip
            elif result.candidates >= reconciler.batch and result.settled:
                delay = interval
                continue  # more are waiting: the next batch now
            else:
                delay = interval
        await asyncio.sleep(delay)


def _previous_run(incident: Incident, settings: Settings) -> str:
    assert incident.id is not None
    first = incident_workflow_id(incident.id, settings.workflow_id_prefix)
    return first if incident.workflow_runs == 2 else f"{first}-run{incident.workflow_runs - 1}"


def _ago(delta: timedelta) -> str:
    seconds = max(0, round(delta.total_seconds()))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"
