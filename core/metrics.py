"""The Prometheus metrics a process records as things happen (prometheus-client's default registry), all named
agent_monitor_*, and what the web and the worker both add at scrape time (the database pool) or on every Temporal
call (client errors). Labels are bounded: agent names, statuses, kinds, operations — never an incident, workflow,
service or user. The list, with sample alerts, is in docs/operations.md ("Metrics").

What a query answers better (incidents by status, pending approvals) is read at scrape time by api/routes/metrics.py;
the worker serves this registry through worker/metrics.py.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from temporalio import client as temporal_client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from core.payloads import MonitorTickResult

# Counters without their `<name>_created` twin: one series each instead of two, and nothing reads the twin.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

STEP_SECONDS = Histogram(
    "agent_monitor_step_duration_seconds",
    "Agent activity attempts by agent and how they ended (succeeded, failed), in seconds from start to end.",
    ["agent", "status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
STEP_FAILURES = Counter(
    "agent_monitor_step_failures",
    "Agent activity attempts that raised, by agent and kind: the ApplicationError's type (Timeout, NotAllowed, "
    "...), else the exception's class; 'cancelled' when Temporal cancelled the attempt.",
    ["agent", "kind"],
)
APPROVALS_REQUESTED = Counter("agent_monitor_approvals_requested", "Approval requests recorded.")
APPROVALS_DECIDED = Counter(
    "agent_monitor_approvals_decided",
    "Approval decisions recorded, by outcome: approved (a person or a policy), rejected, expired.",
    ["status"],
)
MONITOR_CHECKS = Counter(
    "agent_monitor_monitor_checks", "Scheduled service checks, by result: up, degraded, down.", ["status"]
)
MONITOR_LAG = Histogram(
    "agent_monitor_monitor_check_lag_seconds",
    "How late each scheduled check started against the second it was due.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
MONITOR_EVENTS = Counter(
    "agent_monitor_monitor_events",
    "What monitor ticks saw besides checks: outage (a service crossed its failure threshold), recovered, silenced "
    "(a check skipped by a maintenance window).",
    ["event"],
)
MONITOR_LAST_TICK = Gauge(
    "agent_monitor_monitor_last_tick_timestamp_seconds", "When this process last finished a monitor tick (Unix time)."
)
SSE_DROPPED = Counter(
    "agent_monitor_sse_clients_dropped", "Live-event streams ended because the client could not keep up."
)
SSE_REFUSED = Counter(
    "agent_monitor_sse_clients_refused",
    "Live-event streams refused, by the cap that refused them: process (SSE_MAX_CLIENTS, 503), user or token (429).",
    ["reason"],
)
CALLER_LOOKUPS = Counter(
    "agent_monitor_caller_lookups",
    "Requests' callers (API token or session) by where they were found: remembered by the web process, or database "
    "(api/credential_cache.py; mostly database means the credential listener is down or credentials keep changing).",
    ["source"],
)
INCIDENTS_RECONCILED = Counter(
    "agent_monitor_incidents_reconciled",
    "Incidents recorded while Temporal could not start their workflow, settled by the worker's reconciler, by outcome: "
    "started (it started the run), found (the run was in Temporal already), refused (the workflow id belongs to "
    "another database's history).",
    ["outcome"],
)
TEMPORAL_ERRORS = Counter(
    "agent_monitor_temporal_client_errors",
    "Calls of this process's Temporal client that failed with an RPC error, by operation and gRPC status.",
    ["operation", "code"],
)

KIND_MAX = 60  # an exception type's name, as a label: bounded by the code that raises it, cut to this length


def failure_kind(err: BaseException) -> str:
    """The bounded label of a failed attempt: an ApplicationError's type, else the exception's class name."""
    if isinstance(err, asyncio.CancelledError):
        return "cancelled"
    if isinstance(err, ApplicationError) and err.type:
        return err.type[:KIND_MAX]
    return type(err).__name__[:KIND_MAX]


def observe_attempt(agent: str, seconds: float, error: BaseException | None) -> None:
    """One agent attempt ended (activities/runs.py: every agent's attempts go through there)."""
    STEP_SECONDS.labels(agent, "failed" if error is not None else "succeeded").observe(max(0.0, seconds))
    if error is not None:
        STEP_FAILURES.labels(agent, failure_kind(error)).inc()


def observe_check(status: str, lag_seconds: float) -> None:
    """One scheduled check ran (activities/monitoring/tick.py)."""
    MONITOR_CHECKS.labels(status).inc()
    MONITOR_LAG.observe(max(0.0, lag_seconds))


def observe_tick(result: MonitorTickResult) -> None:
    """A monitor tick ended: what it saw besides checks, and that monitoring is alive."""
    for event, count in (("outage", result.outages), ("recovered", result.recovered), ("silenced", result.silenced)):
        if count:
            MONITOR_EVENTS.labels(event).inc(count)
    MONITOR_LAST_TICK.set(time.time())


def observe_decision(status: str) -> None:
    """An approval's outcome was recorded (activities/approvals.py)."""
    APPROVALS_DECIDED.labels(status if status in ("approved", "rejected", "expired") else "other").inc()


def scrape_allowed(authorization: str, token: str) -> bool:
    """METRICS_TOKEN's check of an Authorization header: anything goes when no token is set; else `Bearer <token>`,
    compared in constant time."""
    return not token or hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


class PoolCollector(Collector):
    """The SQLAlchemy pool of one engine, read at scrape time: its size, connections in use and idle, overflow."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        pool: Any = self._engine.pool
        size = GaugeMetricFamily("agent_monitor_db_pool_size", "Connections the database pool keeps open at most.")
        connections = GaugeMetricFamily(
            "agent_monitor_db_pool_connections",
            "Database connections of this process's pool: in_use (checked out), idle (in the pool), overflow "
            "(opened beyond the pool's size).",
            labels=["state"],
        )
        if hasattr(pool, "checkedout"):  # a QueuePool (what make_engine builds); others say nothing
            size.add_metric([], pool.size())
            connections.add_metric(["in_use"], pool.checkedout())
            connections.add_metric(["idle"], pool.checkedin())
            connections.add_metric(["overflow"], max(0, pool.overflow()))
        yield size
        yield connections


def _counted(operation: str) -> Callable[..., Awaitable[Any]]:
    async def call(self: _CountingOutbound, input: Any) -> Any:
        try:
            return await getattr(self.next, operation)(input)
        except RPCError as err:
            TEMPORAL_ERRORS.labels(operation, err.status.name if err.status is not None else "UNKNOWN").inc()
            raise

    call.__name__ = operation
    return call


class _CountingOutbound(temporal_client.OutboundInterceptor):
    pass


# The calls this project makes (starts, queries, signals, updates, describes, cancels); the rest pass through.
COUNTED_OPERATIONS = (
    "start_workflow",
    "query_workflow",
    "signal_workflow",
    "start_workflow_update",
    "describe_workflow",
    "cancel_workflow",
    "terminate_workflow",
    "count_workflows",
)
for _operation in COUNTED_OPERATIONS:
    setattr(_CountingOutbound, _operation, _counted(_operation))


class TemporalErrorCounter(temporal_client.Interceptor):
    """Client interceptor counting RPC errors (Temporal unreachable, timed out, refusing) per operation."""

    def intercept_client(self, next: temporal_client.OutboundInterceptor) -> temporal_client.OutboundInterceptor:
        return _CountingOutbound(next)
