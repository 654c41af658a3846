"""How IncidentWorkflow writes its Postgres projection: snapshots with sequence numbers, queued and sent in
batches by one `record_batch` local activity at a time, so the newest state wins and the workflow's task never
waits on a write per step. A write Postgres refuses for its content is reported in the state, not retried."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.activity_defs import ProjectionActivityDefs
    from core.dry_run import DryRunActivityDefs, DryRunRecord
    from core.payloads import (
        POISON_WRITE,
        SEQ_BLOCK,
        DecisionOrigin,
        RecordBatchInput,
        RecordStepInput,
        RecordWorkflowInput,
        StepState,
        WorkflowState,
    )

PROJECTION_TIMEOUT = timedelta(seconds=30)
PROJECTION_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


class ProjectionWriter:
    """Owned by the workflow: `state` and `origins` are the workflow's own (read when a snapshot is taken);
    `wake` tells the run loop there is something to send on its next round."""

    def __init__(
        self,
        state: WorkflowState,
        origins: list[DecisionOrigin | None],
        wake: Callable[[], None],
        dry_run_id: int | None = None,
    ) -> None:
        self._state = state
        # A dry run writes its whole state to its own row (record_dry_run), never to the incidents' projection.
        self._dry_run_id = dry_run_id
        self._dry_run_dirty = False
        self._origins = origins
        self._wake = wake
        self._seq = 0
        self._pending_workflow: RecordWorkflowInput | None = None
        self._pending_steps: dict[str, RecordStepInput] = {}
        self._flusher: asyncio.Task[None] | None = None
        # The workflow's first row, until someone is known to have written it (the first agent, or a batch).
        self.opening: RecordWorkflowInput | None = None

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def reserve_seq(self) -> int:
        """A block of sequence numbers for an agent activity's own writes (see StepRecord)."""
        base = self._seq + 1
        self._seq += SEQ_BLOCK
        return base

    def snapshot(self) -> RecordWorkflowInput:
        # Steps travel with record_step; keep this payload small.
        state = dataclasses.replace(
            self._state, steps=[], changes=list(self._state.changes), current_steps=list(self._state.current_steps)
        )
        return RecordWorkflowInput(state=state, seq=self.next_seq(), origins=list(self._origins))

    async def record_workflow(self, wait: bool = False) -> None:
        await self._project(self.snapshot(), wait)

    async def record_step(self, step: StepState, input: dict[str, Any] | None = None) -> None:
        snapshot = RecordStepInput(
            workflow_id=self._state.workflow_id,
            step=copy.deepcopy(step),
            seq=self.next_seq(),
            input=input,
            incident_id=self._state.incident_id,
        )
        await self._project(snapshot, False)

    async def _project(self, arg: RecordWorkflowInput | RecordStepInput, wait: bool) -> None:
        """Queue a write to the Postgres projection. Writes overlap with the agents' work and are batched
        (one local activity, one transaction, at most one in flight); each carries a sequence number, so
        the newest state wins."""
        if self._dry_run_id is not None:
            self._dry_run_dirty = True
        elif isinstance(arg, RecordWorkflowInput):
            self._pending_workflow = arg
        else:
            earlier = self._pending_steps.get(arg.step.step_id)
            if earlier is not None and arg.input is None:
                arg.input = earlier.input
            self._pending_steps[arg.step.step_id] = arg
        if wait:
            self.kick()
            await self.drain()
        else:
            self._wake()  # the run loop kicks the writer on its next round

    def kick(self) -> None:
        """Start writing what is queued. The run loop kicks once per round, so the end of one step and
        the start of the next travel in the same batch."""
        if self._flusher is not None and not self._flusher.done():
            return
        if self._dry_run_dirty:
            self._flusher = asyncio.create_task(self._flush_dry_run())
        elif self._pending_workflow or self._pending_steps:
            self._flusher = asyncio.create_task(self._flush())

    async def _flush_dry_run(self) -> None:
        """The dry run's state as it stands now, whole (one row), until nothing changed while it was written."""
        assert self._dry_run_id is not None
        while self._dry_run_dirty:
            self._dry_run_dirty = False
            record = DryRunRecord(dry_run_id=self._dry_run_id, state=copy.deepcopy(self._state), seq=self.next_seq())
            await workflow.execute_local_activity_method(
                DryRunActivityDefs.record_dry_run,
                record,
                start_to_close_timeout=PROJECTION_TIMEOUT,
                retry_policy=PROJECTION_RETRY,
            )

    async def _flush(self) -> None:
        while self._pending_workflow is not None or self._pending_steps:
            batch = RecordBatchInput(
                workflow=self._pending_workflow, steps=list(self._pending_steps.values()), opening=self.opening
            )
            self._pending_workflow, self._pending_steps = None, {}
            try:
                await workflow.execute_local_activity_method(
                    ProjectionActivityDefs.record_batch,
                    batch,
                    start_to_close_timeout=PROJECTION_TIMEOUT,
                    retry_policy=PROJECTION_RETRY,
                )
            except ActivityError as err:  # content Postgres refuses (a poison write): report it, go on
                if not (isinstance(err.cause, ApplicationError) and err.cause.type == POISON_WRITE):
                    raise
                self._state.projection_error = f"{workflow.now().isoformat()}: {err.cause.message}"[:2000]
                workflow.logger.error("projection write refused, not retried: %s", err.cause.message)
            if batch.opening is not None:
                self.opening = None

    async def drain(self) -> None:
        """Wait until everything queued is written."""
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
