"""Fixtures of the fault suite: a ScenarioStack on this test's database, Temporal task queue and app, and the
record of each scenario's outcome (printed as a table at the end of the run and kept in the test artifacts)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client

from core.settings import Settings
from tests.scenarios.harness import ScenarioStack, scenario_stack
from tests.scenarios.scenarios import Outcome, table

OUTCOMES: list[Outcome] = []


@pytest.fixture
async def stack(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient, client_as, tmp_path: Path
) -> AsyncIterator[ScenarioStack]:
    """shop and shop-db running, registered and monitored; an approver's client beside the admin's."""
    approver = await client_as("approver", "ann")
    async with scenario_stack(temporal_client, engine, settings, api, approver, tmp_path / "fault") as running:
        yield running


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[Outcome], None]:
    """Keep a scenario's outcome: in the run's table, the junit properties and test-artifacts/scenarios.jsonl."""

    def keep(outcome: Outcome) -> None:
        OUTCOMES.append(outcome)
        line = json.dumps({"test": request.node.nodeid, **outcome.record()})
        request.node.user_properties.append(("outcome", line))
        artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        with open(artifacts / "scenarios.jsonl", "a") as f:
            f.write(line + "\n")

    return keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.write_sep("=", "fault scenarios (tests/scenarios)")
        terminalreporter.write_line(table(OUTCOMES))
