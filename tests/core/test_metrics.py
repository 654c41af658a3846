"""The metrics recorded as things happen: agent attempts by agent and failure kind, monitor checks, approvals, and
the Temporal client's RPC errors by operation."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from core.metrics import failure_kind, observe_attempt, observe_check, observe_decision, observe_tick
from core.payloads import MonitorTickResult
from core.temporal import connect


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_failure_kinds_are_bounded_names():
    assert failure_kind(ApplicationError("no", type="NotAllowed")) == "NotAllowed"
    assert failure_kind(ApplicationError("no")) == "ApplicationError"
    assert failure_kind(TimeoutError()) == "TimeoutError"
    assert failure_kind(asyncio.CancelledError()) == "cancelled"
    assert len(failure_kind(type("X" * 200, (Exception,), {})())) == 60


def test_an_attempt_is_timed_and_a_failure_counted_by_kind():
    agent = f"agent_{uuid.uuid4().hex[:8]}"
    observe_attempt(agent, 0.3, None)
    observe_attempt(agent, 1.5, ApplicationError("refused", type="NotAllowed"))
    assert value("agent_monitor_step_duration_seconds_count", agent=agent, status="succeeded") == 1
    assert value("agent_monitor_step_duration_seconds_count", agent=agent, status="failed") == 1
    assert value("agent_monitor_step_duration_seconds_sum", agent=agent, status="failed") == 1.5
    assert value("agent_monitor_step_failures_total", agent=agent, kind="NotAllowed") == 1


def test_checks_ticks_and_decisions():
    before = value("agent_monitor_monitor_checks_total", status="down")
    lag_before = value("agent_monitor_monitor_check_lag_seconds_count")
    observe_check("down", 0.02)
    assert value("agent_monitor_monitor_checks_total", status="down") == before + 1
    assert value("agent_monitor_monitor_check_lag_seconds_count") == lag_before + 1
    outages = value("agent_monitor_monitor_events_total", event="outage")
    observe_tick(MonitorTickResult(checked=3, outages=2))
    assert value("agent_monitor_monitor_events_total", event="outage") == outages + 2
    assert value("agent_monitor_monitor_last_tick_timestamp_seconds") > 0
    expired = value("agent_monitor_approvals_decided_total", status="expired")
    observe_decision("expired")
    observe_decision("something else")  # never a new label value
    assert value("agent_monitor_approvals_decided_total", status="expired") == expired + 1
    assert value("agent_monitor_approvals_decided_total", status="something else") == 0


async def test_temporal_client_errors_are_counted_by_operation(settings):
    client = await connect(settings)
    labels = {"operation": "describe_workflow", "code": "NOT_FOUND"}
    before = value("agent_monitor_temporal_client_errors_total", **labels)
    with pytest.raises(RPCError):
        await client.get_workflow_handle(f"no-such-{uuid.uuid4().hex}").describe()
    assert value("agent_monitor_temporal_client_errors_total", **labels) == before + 1
