"""An agent attempt's record (activities/runs.py) on real Postgres."""

from __future__ import annotations

import dataclasses

import pytest
from sqlmodel import Session, select
from temporalio.testing import ActivityEnvironment

from activities.runs import AgentRunLog
from core.payloads import AgentInput, IncidentContext
from core.tables import AgentRun
from tests.secret_shapes import shown

TOKEN = "ghp_0123456789abcdefABCDEFGHIJklmnopqrst"


async def test_a_failed_attempts_error_is_redacted_before_it_is_cut_and_stored(engine):
    """The incident page shows a failed attempt's error: a plugin's exception quoting a secret, whole or where the
    2000 characters kept end, shows none of it."""
    input = AgentInput(
        incident=IncidentContext(incident_id=1, title="checkout errors", service="checkout", severity="P2"),
        workflow_id="incident-runs-redaction",
        step_id="plugin",
        params={},
    )

    async def failing(message: str) -> None:
        raise RuntimeError(message)

    runs = AgentRunLog(engine)
    messages = (f"login failed: postgres://app:hunter2hunter2@db/main, {TOKEN}", f"{'x' * 1970} {TOKEN}")
    for n, message in enumerate(messages):
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, activity_id=f"attempt-{n}")  # two attempts, two records
        with pytest.raises(RuntimeError):
            await env.run(runs.around, "disk_cleanup", input, lambda m=message: failing(m))
    with Session(engine) as session:
        runs_of_the_step = select(AgentRun).where(AgentRun.step_id == "plugin").order_by(AgentRun.id)
        errors = [run.error or "" for run in session.exec(runs_of_the_step)]
    assert errors[0] == "RuntimeError: login failed: postgres://app:[REDACTED]@db/main, [REDACTED]"
    assert len(errors[1]) <= 2000 and errors[1].endswith("x ")  # the token the cut would split is left out
    for error in errors:
        assert not shown(TOKEN[4:], error) and "hunter2" not in error
