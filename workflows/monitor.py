"""ServiceMonitorWorkflow: scheduled monitoring of one shard of the services, for as long as it runs.

It is a loop of ticks — `check_due_services` activities, each running the checks due in the next
MONITOR_WINDOW_SECONDS at their times, and rolling on into further windows while a slow check is still in flight
(activities/monitoring/) — and continues as new every `ticks_per_run` ticks (or when Temporal suggests it),
carrying its totals. Shard 0 also prunes old results once a run, beside its ticks. A worker dying mid-tick costs one
heartbeat timeout: Temporal retries the tick on another worker, and the tick's writes are idempotent.

Debugging: the `status` query answers totals and the last tick (`temporal workflow query --name status --workflow-id
service-monitor`); the workflow's summary names its shard."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from core.payloads import (
        CHECK_DUE_SERVICES,
        PRUNE_UPTIME,
        MonitorInput,
        MonitorStatus,
        MonitorTick,
        MonitorTickResult,
        MonitorTotals,
    )

# Ample for a window of up to 300 s plus checks of up to 120 s; a dead worker is noticed by the heartbeat timeout.
TICK_TIMEOUT = timedelta(minutes=10)
TICK_HEARTBEAT = timedelta(seconds=30)
TICK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
# Pruning is housekeeping: a few tries a run, never holding up the ticks or the next run.
PRUNE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=10), maximum_attempts=3)


def monitor_workflow_id(base: str, shard: int, shards: int) -> str:
    return base if shards == 1 else f"{base}-{shard + 1}of{shards}"


@workflow.defn(name="ServiceMonitorWorkflow", sandboxed=False)
class ServiceMonitorWorkflow:
    @workflow.init
    def __init__(self, input: MonitorInput) -> None:
        self._input = input
        self._totals = MonitorTotals(**vars(input.totals))
        self._last: MonitorTickResult | None = None
        self._last_at: str | None = None

    @workflow.run
    async def run(self, input: MonitorInput) -> None:
        # Once a run (about an hour), beside the ticks, results older than UPTIME_RETENTION_DAYS go.
        prune = (
            workflow.start_activity(
                PRUNE_UPTIME,
                start_to_close_timeout=TICK_TIMEOUT,
                heartbeat_timeout=TICK_HEARTBEAT,
                retry_policy=PRUNE_RETRY,
                result_type=int,
            )  # fmt: skip
            if input.shard == 0
            else None
        )
        for _ in range(max(1, input.ticks_per_run)):
            try:
                tick = await workflow.execute_activity(
                    CHECK_DUE_SERVICES,
                    MonitorTick(shard=input.shard, shards=input.shards),
                    result_type=MonitorTickResult,
                    start_to_close_timeout=TICK_TIMEOUT,
                    heartbeat_timeout=TICK_HEARTBEAT,
                    retry_policy=TICK_RETRY,
                )
            except ActivityError:
                # Only a non-retryable failure gets here (the retry policy retries the rest for ever): keep the
                # schedule going rather than end monitoring for good.
                workflow.logger.exception("monitor tick failed; next tick in 10 s")
                await workflow.sleep(10)
                continue
            self._count(tick)
            if workflow.info().is_continue_as_new_suggested():
                break
        if prune is not None:
            if not prune.done():  # a long backlog: what it deleted stays deleted, the next run goes on
                prune.cancel()
            try:
                await prune
            except (ActivityError, asyncio.CancelledError):
                workflow.logger.warning("pruning old check results did not finish; the next run goes on")
        self._totals.runs += 1
        workflow.continue_as_new(
            MonitorInput(shard=input.shard, shards=input.shards, ticks_per_run=input.ticks_per_run, totals=self._totals)
        )

    def _count(self, tick: MonitorTickResult) -> None:
        totals = self._totals
        totals.ticks += 1
        totals.checked += tick.checked
        totals.down += tick.down
        totals.silenced += tick.silenced
        totals.outages += tick.outages
        totals.recovered += tick.recovered
        self._last, self._last_at = tick, workflow.now().isoformat()

    @workflow.query
    def status(self) -> MonitorStatus:
        return MonitorStatus(
            shard=self._input.shard,
            shards=self._input.shards,
            totals=self._totals,
            last_tick=self._last,
            last_tick_at=self._last_at,
        )
