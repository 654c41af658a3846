"""Fixes that do not happen, on real processes: the incident stays open and escalates. An approval nobody answers
expires on time (while the worker is down) and nothing runs; a config error survives the approved restart and
verify fails after its checks; a worker SIGKILLed while the restart command runs leaves it run once."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.scenarios.outcome import Outcome
from tests.scenarios.scenarios import Play
from tests.scenarios.unfixed import APPROVAL_TIMEOUT_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def assert_open_and_escalated(outcome: Outcome) -> None:
    assert outcome.workflow == "halted", outcome.steps  # waits for a person: retry_step or abort
    assert outcome.status not in ("resolved", "closed") and outcome.incidents == 1, outcome.timeline
    level = outcome.facts["escalation"]
    assert (level["level"], level["previous_severity"], level["severity"]) == (1, "P2", "P1")  # shop's P2, raised
    assert level["reason"] == "step restart failed; waiting for retry_step or abort" or level["reason"].startswith(
        "step verify failed"
    )
    assert outcome.facts["severity"] == "P1"


async def test_an_ignored_approval_expires_on_time_across_a_worker_restart_and_nothing_runs(play: Play) -> None:
    outcome = await play("approval_ignored")
    approval = outcome.facts["approval"]
    assert approval["status"] == "expired"
    requested, expires = (datetime.fromisoformat(approval[k]) for k in ("requested_at", "expires_at"))
    assert abs((expires - requested).total_seconds() - APPROVAL_TIMEOUT_S) < 1
    # On time: expired at its expires_at, though the worker that recorded it came back later.
    assert (approval["decided_at"], approval["decided_by"]) == (approval["expires_at"], "timer")
    assert [e["kind"] for e in approval["events"]] == ["requested", "expired"]
    restart = outcome.steps["restart"]
    assert restart["status"] == "failed" and restart["error"].startswith("not run: approval expired at ")
    assert restart.get("output") is None  # the command never ran
    assert outcome.restarts == 0  # the start counter did not move
    assert outcome.steps["verify"]["status"] not in ("running", "completed")
    assert outcome.facts["worker_starts"] == 2  # the worker was killed while the approval waited, then came back
    assert_open_and_escalated(outcome)
    assert outcome.facts["escalation"]["reason"] == "step restart failed; waiting for retry_step or abort"


async def test_a_config_error_is_restarted_once_verify_fails_and_the_incident_escalates(play: Play) -> None:
    outcome = await play("config_error")
    restart = outcome.steps["restart"]
    assert restart["approval"]["status"] == "approved"
    assert restart["output"]["ok"] is False
    assert "exited at start-up with status 78" in restart["output"]["data"]["stdout"]
    assert outcome.restarts == 1  # the approved restart, which failed at start-up: no more (bounded)
    verify = outcome.steps["verify"]
    assert verify["status"] == "failed" and verify["output"]["data"]["checks"]["done"] == verify["output"]["data"][
        "checks"]["allowed"]  # fmt: skip
    assert outcome.cause is not None and "config error" in outcome.cause  # the log step named it
    # and the approver was told, before deciding, that a restart would read the same configuration
    assert "logs: configuration error, a restart is unlikely to fix it: " in outcome.facts["approval_context"]
    assert_open_and_escalated(outcome)
    assert outcome.facts["escalation"]["reason"].startswith("step verify failed")


async def test_a_worker_killed_mid_restart_leaves_the_command_run_once(play: Play) -> None:
    outcome = await play("worker_killed")
    assert outcome.facts["worker_exit"] == -9 and outcome.facts["command_running_when_killed"]
    assert outcome.restarts == 1, outcome.facts["starts_in_log"]  # the command ran once, not again
    assert len(outcome.facts["starts_in_log"]) == 1
    restart = outcome.steps["restart"]
    assert restart["status"] == "failed"
    assert "outcome unknown: the command may have run (started at " in restart["error"]
    assert restart["error"].endswith("not run again.") or "not run again" in restart["error"]
    assert_open_and_escalated(outcome)
    assert outcome.facts["escalation"]["reason"] == "step restart failed; waiting for retry_step or abort"
