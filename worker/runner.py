"""Builds and runs the Temporal worker: IncidentWorkflow plus its agent and projection activities, the service
monitors (ServiceMonitorWorkflow and its tick activity), and the reconciler that starts the workflows of incidents
recorded while Temporal was unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.approvals import ApprovalActivities
from activities.base import AgentDeps
from activities.chain import ChainAgents
from activities.conversation import ConversationStore, conversation_summarizer
from activities.dry_run import DryRunActivities
from activities.escalation import EscalationActivities
from activities.monitoring import MonitorActivities
from activities.notify import NotifyActivities
from activities.projection import ProjectionActivities
from activities.registry import agent_activities
from activities.runs import AgentRunLog
from activities.webhook_agent import WebhookAgentActivities
from core.commands import legacy_warnings
from core.outbound import OutboundPolicy, guarded_async_client
from core.settings import Settings
from core.telemetry import Tracing
from services.agent_packages import load_plugins, unload_plugins
from services.incidents.open import open_incident
from services.incidents.reconcile import Reconciler, reconcile_forever
from worker.metrics import serve_metrics
from worker.monitors import ensure_monitors
from worker.plugins import RESTART_REQUESTED, AgentWatch
from worker.plugins import current as current_agents
from workflows.incident import IncidentWorkflow, PlaybookDryRunWorkflow
from workflows.monitor import ServiceMonitorWorkflow

log = logging.getLogger(__name__)


GC_GEN0_THRESHOLD = 20_000  # allocations between young-generation collections (Python's default: 700)


def tune_gc() -> None:
    """For a long-running worker, once its imports are done: what is loaded now is never collected again
    (gc.freeze), and young collections run 30 times less often. Each agent attempt allocates thousands of
    short-lived objects: with the defaults, bench.engine's process spent ~8 % more CPU per incident (35 ms
    against 32.7)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)


@asynccontextmanager
async def reconciling(client: Client, engine: Engine, settings: Settings) -> AsyncIterator[asyncio.Task[None] | None]:
    """Reconcile in the background while the block runs: a round now, then every RECONCILE_INTERVAL_SECONDS
    (0: off, and None is yielded). Every worker runs one; they never start the same incident twice."""
    interval = settings.reconcile_interval_seconds
    if not interval:
        yield None
        return
    reconciler = Reconciler(engine=engine, temporal=client, settings=settings)
    task = asyncio.create_task(reconcile_forever(reconciler, interval=interval), name="reconcile-incidents")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def incident_worker(
    client: Client,
    engine: Engine,
    settings: Settings,
    *,
    task_queue: str | None = None,
    tracing: Tracing | None = None,
    **options: Any,
) -> AsyncIterator[Worker]:
    """A running worker for the incident task queue; stops cleanly on exit. `options` go to the Worker
    (e.g. no_remote_activities=True for a worker that runs workflow tasks only). With tracing, the agents' HTTP
    calls are spans too (the client's interceptors already trace workflows and activities)."""
    # Agents installed from the marketplace: on the import path before the agents' activities are listed.
    await asyncio.to_thread(load_plugins, engine, settings.effective_plugin_dir)
    executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="activity")
    async with guarded_async_client(
        OutboundPolicy.from_settings(settings), headers={"User-Agent": "agent-monitor/0.1"}
    ) as http:
        if tracing is not None:
            tracing.instrument_http(http)
        conversation = ConversationStore(
            engine, default_budget=settings.context_budget_tokens, summarizer=conversation_summarizer(settings)
        )
        runs = AgentRunLog(engine, conversation)
        agents = ChainAgents(http, check_timeout=settings.check_timeout_seconds, runs=runs)
        projection = ProjectionActivities(engine)
        notify = NotifyActivities(engine, settings)
        worker = Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=[IncidentWorkflow, PlaybookDryRunWorkflow, ServiceMonitorWorkflow],
            activities=[
                *agents.all(),
                *agent_activities(AgentDeps(http=http, settings=settings, engine=engine), runs),
                *WebhookAgentActivities(engine, http, runs).all(),
                *projection.all(),
                *ApprovalActivities(engine, settings.approval_channels(), settings).all(),
                *notify.all(),
                *EscalationActivities(engine, settings).all(),
                *MonitorActivities(engine, http, settings, open_incident=open_incident).all(),
                *DryRunActivities(engine, http, settings).all(),
            ],
            activity_executor=executor,
            **options,
        )
        try:
            async with worker:
                yield worker
        finally:
            unload_plugins()
    executor.shutdown(wait=False, cancel_futures=True)


async def run_worker(client: Client, engine: Engine, settings: Settings, *, tracing: Tracing | None = None) -> int:
    """Run until SIGINT/SIGTERM, then drain; serves the worker's metrics meanwhile (WORKER_METRICS_PORT) and
    reconciles incidents recorded while Temporal was unavailable (RECONCILE_INTERVAL_SECONDS). Returns the exit
    code: 0, or RESTART_REQUESTED when the installed agents changed (worker/plugins.py) and it drained to load them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for warning in legacy_warnings(settings.command_allowlist):
        log.warning("%s", warning)
    watch = AgentWatch(engine, await asyncio.to_thread(current_agents, engine))
    watching = asyncio.create_task(watch.run(), name="agent-watch") if settings.worker_reload_agents else None
    changed = asyncio.create_task(watch.changed.wait())
    try:
        with serve_metrics(settings, engine):
            async with (
                incident_worker(
                    client,
                    engine,
                    settings,
                    tracing=tracing,
                    graceful_shutdown_timeout=timedelta(seconds=settings.worker_drain_seconds),
                ),
                reconciling(client, engine, settings),
            ):
                if settings.monitoring_enabled:
                    monitors = await ensure_monitors(client, settings)
                    log.info("service monitors running: %s", ", ".join(monitors))
                log.info("worker polling task queue %r on %s", settings.task_queue, settings.effective_temporal_address)
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({stopping, changed}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                log.info("worker stopping%s", f" to load new agents ({watch.reason})" if watch.changed.is_set() else "")
        return RESTART_REQUESTED if watch.changed.is_set() and not stop.is_set() else 0
    finally:
        changed.cancel()
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await watch.close()
