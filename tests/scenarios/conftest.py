"""Fixtures of the fault suite: `play(name)` runs a scenario of the catalogue on a ScenarioStack of this test's
database, Temporal task queue and app, and keeps its outcome (printed as a table at the end of the run and kept in
the test artifacts)."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client

from core.settings import Settings
from tests.scenarios.harness import scenario_stack
from tests.scenarios.outcome import Outcome, table
from tests.scenarios.scenarios import SCENARIOS, Play

OUTCOMES: list[Outcome] = []


@pytest.fixture
async def play(
    request: pytest.FixtureRequest, temporal_client: Client, engine: Engine, settings: Settings,
    api: httpx.AsyncClient, client_as: Callable[..., Awaitable[httpx.AsyncClient]], tmp_path: Path,
) -> Play:  # fmt: skip
    """play(name): the scenario on shop and shop-db running, registered and monitored, with an approver's client
    (ann) beside the admin's; its outcome is kept in the run's table, the junit properties and
    test-artifacts/scenarios.jsonl."""
    approver = await client_as("approver", "ann")

    async def run(name: str) -> Outcome:
        scenario = SCENARIOS[name]
        async with scenario_stack(
            temporal_client, engine, settings, api, approver, tmp_path / "fault", worker_process=scenario.worker_process
        ) as stack:
            outcome = await scenario.run(stack)
        keep(request, outcome)
        return outcome

    return run


def keep(request: pytest.FixtureRequest, outcome: Outcome) -> None:
    OUTCOMES.append(outcome)
    line = json.dumps({"test": request.node.nodeid, **outcome.record()}, default=str)
    request.node.user_properties.append(("outcome", line))
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(artifacts / "scenarios.jsonl", "a") as f:
        f.write(line + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.write_sep("=", "fault scenarios (tests/scenarios)")
        terminalreporter.write_line(table(OUTCOMES))
