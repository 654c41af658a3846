"""Faults the product handles today, end to end on real processes: the monitor detects the fault (no incident is
injected), the agents investigate the service's real log file, metrics and dependency, an approver approves the
restart through the API, the allowlisted restart command runs once, verify passes, the incident is resolved."""

from __future__ import annotations

import pytest

from tests.scenarios.outcome import Outcome
from tests.scenarios.scenarios import Play

# Real time on the dev server; generous for a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def assert_restarted_once_and_resolved(outcome: Outcome) -> None:
    steps = outcome.steps
    assert outcome.workflow == "completed", steps
    assert (outcome.status, outcome.incidents) == ("resolved", 1), outcome.timeline
    assert outcome.healthy_before_approval is False  # nothing restarted it before the approval
    assert steps["restart"]["approval"]["status"] == "approved"
    assert steps["restart"]["approval"]["decided_by"] == "ann"
    assert steps["restart"]["output"]["ok"], steps["restart"]["output"]
    assert "shop: restarted" in steps["restart"]["output"]["data"]["stdout"]
    assert outcome.restarts == 1  # the start counter: exactly one start after the fault
    assert steps["verify"]["status"] == "completed" and steps["verify"]["output"]["ok"]
    assert outcome.detected_s is not None and outcome.verified_s is not None
    assert 0 < outcome.detected_s < outcome.verified_s


async def test_a_killed_process_is_detected_restarted_once_after_approval_and_verified(play: Play) -> None:
    outcome = await play("process_killed")
    assert_restarted_once_and_resolved(outcome)
    assert outcome.cause is not None and outcome.cause.startswith("monitor: "), outcome.cause
    # The investigators looked where they were told: the metrics saw it gone, the dependency healthy.
    assert outcome.steps["metrics"]["output"]["data"]["breached"] == ["up"]
    assert outcome.steps["deps"]["output"]["data"]["broken"] == []


async def test_an_error_spike_is_named_by_its_error_group_in_the_log(play: Play) -> None:
    outcome = await play("error_spike")
    assert_restarted_once_and_resolved(outcome)
    logs = outcome.steps["logs"]["output"]
    assert logs["ok"] is False and logs["data"]["error_count"] > 0
    top = logs["data"]["top"][0]
    assert top["line"].startswith("ERROR [db] query failed: connection pool exhausted"), top
    assert top["count"] >= 2  # repeats of the group, with different request ids, counted once
    assert "connection pool exhausted" in logs["summary"]
    assert outcome.cause is not None and outcome.cause.startswith("logs: ")
    assert "error_ratio" in outcome.steps["metrics"]["output"]["data"]["breached"]


async def test_an_oom_exit_is_detected_restarted_once_and_verified(play: Play) -> None:
    outcome = await play("oom_exit")
    assert outcome.exit_code == 137
    assert_restarted_once_and_resolved(outcome)
