"""Keeping the service monitors running: every worker, as it starts, makes sure one ServiceMonitorWorkflow per
shard runs (starting an already running one is a no-op) and stops those of another shard count, so N workers
never run N monitors and changing MONITOR_SHARDS takes effect at the next worker start."""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from core.payloads import SERVICE_MONITOR_WORKFLOW, MonitorInput
from core.settings import Settings
from workflows.monitor import monitor_workflow_id

log = logging.getLogger(__name__)


async def ensure_monitors(client: Client, settings: Settings) -> list[str]:
    """Start the monitor of every shard unless it runs; terminate running monitors of this deployment that are not
    one of them. Returns the monitors' workflow ids."""
    shards = settings.monitor_shards
    wanted = [monitor_workflow_id(settings.monitor_workflow_id, shard, shards) for shard in range(shards)]
    for shard, workflow_id in enumerate(wanted):
        await client.start_workflow(
            SERVICE_MONITOR_WORKFLOW,
            MonitorInput(shard=shard, shards=shards),
            id=workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"Service monitor, shard {shard + 1} of {shards}",
        )
    base = settings.monitor_workflow_id
    query = f'WorkflowType = "{SERVICE_MONITOR_WORKFLOW}" AND ExecutionStatus = "Running"'
    try:
        async for execution in client.list_workflows(query):
            ours = execution.id == base or execution.id.startswith(f"{base}-")
            if ours and execution.id not in wanted:
                log.info("stopping monitor %s: MONITOR_SHARDS is now %d", execution.id, shards)
                await client.get_workflow_handle(execution.id).terminate(reason=f"MONITOR_SHARDS is now {shards}")
    except RPCError as err:  # no visibility permission, say: the monitors we need run; old ones may still
        log.warning("cannot look for monitors of another MONITOR_SHARDS value: %s", err.message)
    return wanted
