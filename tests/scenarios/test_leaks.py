"""A secret in a log line, on real processes: after the incident's run, it is nowhere in clear — pages, API answers,
agents' contexts, the Temporal history."""

from __future__ import annotations

import pytest

from tests.scenarios.scenarios import Play

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def test_a_secret_in_a_log_line_never_reaches_a_page_an_api_answer_or_the_history(play: Play) -> None:
    outcome = await play("secret_in_log")
    facts = outcome.facts
    assert facts["log_holds"]  # the service did log them, in clear
    assert outcome.workflow == "completed" and outcome.status == "resolved" and outcome.restarts == 1
    logs = outcome.steps["logs"]["output"]
    assert "login to the upstream failed" in logs["summary"]  # the agents saw the line: redacted
    assert facts["found"] == {}, facts["found"]
    assert facts["masked"] > 0
    searched = facts["searched"]
    assert {"incident page", "approval page", "GET /api/incidents/{id}", "GET /api/conversations?incident=",
            "GET /api/workflows/{id}", "Temporal history"} <= searched.keys()  # fmt: skip
    assert all(size > 0 for size in searched.values()), searched
    assert {"incident page", "GET /api/conversations?incident=", "GET /api/workflows/{id}", "Temporal history",
            "approval page"} <= set(facts["carried"])  # fmt: skip
