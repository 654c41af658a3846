"""Recorded histories still replay: a change that would break running incidents fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.converter import DATA_CONVERTER
from workflows.incident import IncidentWorkflow
from workflows.monitor import ServiceMonitorWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_recorded():
    assert {p.stem for p in HISTORIES} >= {"healthy", "recovering", "down", "monitor", "approved",
                                           "aborted-waiting-approval", "changed-at-run-time"}  # fmt: skip


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path):
    history = WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())
    await Replayer(workflows=[IncidentWorkflow, ServiceMonitorWorkflow], data_converter=DATA_CONVERTER).replay_workflow(
        history
    )
