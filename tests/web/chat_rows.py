"""Conversation messages written straight to Postgres (as the agents' one-statement write stores them), for the chat
view's and the conversation search's browser tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from core.conversations import ConversationMessage
from tests.api.incident_rows import insert_incident

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def add_message(
    engine,
    incident_id: int,
    content: str,
    *,
    agent: str | None = "investigate_logs",
    step: str | None = "logs",
    role: str = "assistant",
    attempt: int | None = 1,
    run: int = 1,
    seconds: float = 0,
    kind: str = "message",
    covers: list[int] | None = None,
    meta: dict[str, Any] | None = None,
) -> int:
    """One message; `seconds` after T0. Agents' messages carry their attempt and run in metadata, as stored."""
    extra: dict[str, Any] = {"tokens": len(content.split()), **(meta or {})}
    if step is not None and attempt is not None:
        extra.update(attempt=str(attempt), run=run)
    with Session(engine) as session:
        row = ConversationMessage(
            incident_id=incident_id,
            workflow_id=f"incident-{incident_id}",
            step_id=step,
            agent=agent,
            role=role,
            kind=kind,
            content=content,
            covers=covers,
            meta=extra,
            created_at=T0 + timedelta(seconds=seconds),
        )
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


def incident_with_conversation(engine, **fields: Any) -> tuple[int, dict[str, int]]:
    """An incident whose conversation has two agents' steps (one retried), tool output, an operator's message and a
    summary: (incident id, message ids by name)."""
    incident = insert_incident(engine, **{"title": "checkout 500s", "service": "checkout", **fields})
    ids = {
        "alert": add_message(
            engine,
            incident,
            "Alertmanager: HighErrorRate firing",
            agent=None,
            step=None,
            role="tool",
            meta={"author": "alertmanager"},
        ),
        "logs_tool": add_message(
            engine,
            incident,
            "Top error lines, checkout.log:\nERROR pool exhausted (x42)\nERROR timeout",
            role="tool",
            seconds=1,
        ),
        "logs": add_message(engine, incident, "Found **42** `pool exhausted` errors in checkout.log", seconds=2),
        "metrics": add_message(
            engine,
            incident,
            "p99 latency of checkout rose to 2300 ms",
            agent="investigate_metrics",
            step="metrics",
            seconds=3,
        ),
        "failed": add_message(
            engine,
            incident,
            "remediate_command attempt failed: exit 1",
            agent="remediate_command",
            step="restart",
            role="system",
            seconds=4,
            meta={"ok": False, "error": True},
        ),
        "operator": add_message(
            engine,
            incident,
            "Rolled back deploy 4711, try again",
            agent=None,
            step=None,
            role="user",
            seconds=5,
            meta={"author": "oscar"},
        ),
        "restarted": add_message(
            engine,
            incident,
            "restarted checkout-api; pool back to 3/50",
            agent="remediate_command",
            step="restart",
            attempt=2,
            seconds=6,
        ),
    }
    ids["summary"] = add_message(
        engine,
        incident,
        "Earlier: errors in checkout.log, latency up, one restart failed.",
        agent="verify",
        step="verify",
        attempt=None,
        kind="summary",
        covers=[ids["logs"], ids["metrics"], ids["failed"]],
        seconds=7,
    )
    return incident, ids
