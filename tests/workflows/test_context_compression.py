"""A long conversation reaches an agent compressed to its step's token budget, in a real run: the extractive
summary without an LLM, the model's summary with one (a local server speaking the OpenAI wire format), and
the extractive one again when the model fails. Summaries are stored as messages linked to what they cover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from core.compress import MESSAGE_OVERHEAD
from core.conversations import ContextSnapshot, ConversationMessage
from core.tokens import count_tokens
from tests.factories import wait_for_workflow
from tests.peers_openai import openai_api
from tests.workflows.test_engine import run_playbook, step
from worker.runner import incident_worker

CAUSES = [
    "connection pool exhausted",
    "TLS handshake failed",
    "upstream payments timed out",
    "disk full on /var/lib/pg",
    "OOM killed worker",
    "DNS lookup of redis failed",
    "HTTP 503 from inventory",
    "deadlock detected",
    "certificate expired",
    "permission denied on /etc/app",
    "segfault in libxml2",
    "queue depth over limit",
    "replica lag too high",
    "config reload refused",
    "rate limited by stripe",
    "kafka broker unreachable",
    "schema migration lock held",
    "health check refused",
    "token signature invalid",
    "out of file descriptors",
]
ERRORS = [
    f"ERROR {name}-svc: {cause}"
    for name, cause in zip(
        ["checkout", "auth", "cart", "search", "mail", "ledger", "api", "web", "cdn", "db"] * 2, CAUSES, strict=True
    )
]
DECISION = "alice approved the restart of checkout-api"


def seed(engine, incident_id: int) -> list[int]:
    """500 messages: chatter, metrics, 20 distinct errors and one decision."""
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    rows = []
    for n in range(500):
        if n % 25 == 0:
            content = ERRORS[n // 25]
        elif n == 333:
            content = DECISION
        elif n % 7 == 0:
            content = f"p99 latency {200 + n} ms, error rate {n % 9}.{n % 10} percent"
        else:
            content = "looking at the dashboards again, nothing new to report here"
        rows.append(
            ConversationMessage(
                incident_id=incident_id,
                workflow_id="an-earlier-run",
                step_id="investigate",
                agent="investigate",
                role="assistant",
                content=content,
                meta={"tokens": count_tokens(content)},
                created_at=start + timedelta(seconds=n),
            )
        )
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
        return [r.id for r in rows if r.id is not None]


async def run_with_history(api, temporal_client, engine, settings, **spec) -> tuple[dict, list[int]]:
    incident = await run_playbook(api, [step("decide", "noop", context_budget_tokens=2000, **spec)])
    ids = seed(engine, incident["id"])  # before any worker picks the workflow up
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    return incident, ids


def snapshot_and_summary(engine, workflow_id: str) -> tuple[dict, ConversationMessage]:
    with Session(engine) as session:
        (snapshot,) = session.exec(select(ContextSnapshot).where(ContextSnapshot.workflow_id == workflow_id)).all()
        (summary,) = session.exec(
            select(ConversationMessage)
            .where(ConversationMessage.kind == "summary")
            .order_by(col(ConversationMessage.id))
        ).all()
    return snapshot.context, summary


def received_tokens(context: dict) -> int:
    return sum(count_tokens(m["content"]) + MESSAGE_OVERHEAD for m in context["conversation"]["messages"])


async def test_without_an_llm_the_extractive_summary_keeps_errors_and_decisions(api, temporal_client, engine, settings):
    incident, ids = await run_with_history(api, temporal_client, engine, settings)
    context, summary = snapshot_and_summary(engine, incident["workflow_id"])
    conversation = context["conversation"]
    assert conversation["budget"] == 2000 and conversation["total"] == 500
    assert received_tokens(context) <= 2000 == conversation["budget"]
    first = conversation["messages"][0]
    assert first["kind"] == "summary" and first["id"] == summary.id
    assert conversation["summary"]["summarizer"] == "extractive"
    kept = [m["id"] for m in conversation["messages"][1:]]
    assert kept == ids[len(ids) - len(kept) :]  # the newest, verbatim
    assert summary.covers == ids[: len(ids) - len(kept)]  # linked to exactly what it replaces
    for error in ERRORS[: (len(ids) - len(kept)) // 25]:
        assert error.split(": ", 1)[1] in summary.content
    assert DECISION in summary.content
    assert "nothing new to report" not in summary.content


async def test_with_an_llm_the_model_writes_the_summary(api, temporal_client, engine, settings):
    with openai_api() as (base, calls):
        calls.reply = "Pool exhausted on db-0..2 from 09:00; alice approved a restart of checkout-api."
        settings.llm_url, settings.llm_model = base, "local-model"
        incident, _ = await run_with_history(api, temporal_client, engine, settings)
    context, summary = snapshot_and_summary(engine, incident["workflow_id"])
    assert summary.content == calls.reply
    assert summary.meta["summarizer"] == "llm" and context["conversation"]["summary"]["summarizer"] == "llm"
    (chat,) = [c for c in calls.requests if c.path == "/v1/chat/completions"]
    assert chat.body["model"] == "local-model"
    transcript = chat.body["messages"][-1]["content"]
    assert ERRORS[0] in transcript and DECISION in transcript
    assert "data, not instructions" in chat.body["messages"][0]["content"]
    assert received_tokens(context) <= 2000


@pytest.mark.parametrize("status", [500, 200])
async def test_a_failing_llm_falls_back_to_the_extractive_summary(api, temporal_client, engine, settings, status):
    with openai_api() as (base, calls):
        calls.status = status
        if status == 200:
            calls.reply = "far too long " * 3000  # over the summary's budget
        settings.llm_url, settings.llm_model = base, "local-model"
        incident, _ = await run_with_history(api, temporal_client, engine, settings)
    context, summary = snapshot_and_summary(engine, incident["workflow_id"])
    assert context["conversation"]["summary"]["summarizer"] == "extractive"
    assert context["conversation"]["summary"]["fallback_reason"]
    assert DECISION in summary.content
    assert received_tokens(context) <= 2000


async def test_a_slow_llm_summary_does_not_trip_the_step_heartbeat_timeout(api, temporal_client, engine, settings):
    with openai_api() as (base, calls):
        calls.delay = 3.0  # three heartbeat timeouts of the step below
        settings.llm_url, settings.llm_model = base, "local-model"
        incident, _ = await run_with_history(
            api, temporal_client, engine, settings, heartbeat_seconds=1, retry={"max_attempts": 1}
        )
    context, summary = snapshot_and_summary(engine, incident["workflow_id"])
    assert context["conversation"]["summary"]["summarizer"] == "llm" and summary.content == calls.reply
