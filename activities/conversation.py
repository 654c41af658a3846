"""The conversation as agent activities see it: load what an agent needs (one round trip), assemble and
compress its context, and the SQL that stores its context snapshot and its messages in the same statement
as its attempt's record (activities/runs.py), so an agent step costs no extra write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from core.compress import Compressed, Message, Summarizer, compress
from core.context import build_context, canonical
from core.conversations import CONTENT_MAX, ROLES
from core.db import autocommit_rows
from core.llm import LLMSummarizer, llm_client
from core.payloads import AgentInput, AgentResult
from core.redact import redact, redact_text
from core.settings import Settings
from core.tokens import count_tokens

HISTORY_MAX = 1000  # newest messages loaded for one agent; older ones are only in the summary's count

_LOAD = text(
    """
WITH recent AS (
    SELECT id, role, kind, agent, step_id, content, metadata, created_at
    FROM conversation_messages
    WHERE incident_id = :incident_id AND kind = 'message'
      AND (CAST(:visible AS varchar[]) IS NULL OR step_id IS NULL OR workflow_id IS DISTINCT FROM :workflow_id
           OR step_id = ANY(CAST(:visible AS varchar[])))
    ORDER BY id DESC LIMIT :limit
)
SELECT
    (SELECT COALESCE(jsonb_agg(to_jsonb(r) ORDER BY r.id), '[]'::jsonb) FROM recent AS r) AS messages,
    (SELECT jsonb_build_object('check', s.output #> '{data,check}', 'observed_by', s.step_id, 'agent', s.agent,
                               'observed_at', s.finished_at)
     FROM workflow_steps AS s
     WHERE s.workflow_id = :workflow_id AND s.output #> '{data,check}' IS NOT NULL
       AND jsonb_typeof(s.output #> '{data,check}') = 'object'
     ORDER BY s.finished_at DESC NULLS LAST LIMIT 1) AS health,
    (SELECT jsonb_build_object('description', i.description, 'status', i.status, 'created_at', i.created_at)
     FROM incidents AS i WHERE i.id = :incident_id) AS incident,
    (SELECT jsonb_build_object('name', sv.name) || sv.config || jsonb_build_object('dependency_checks',
              (SELECT coalesce(jsonb_object_agg(d.name, d.config -> 'check'), '{}'::jsonb) FROM services AS d
               WHERE d.name IN (SELECT jsonb_array_elements_text(sv.config -> 'dependencies'))))
     FROM services AS sv WHERE sv.name = :service) AS service
"""
)

_COUNT = text("SELECT count(*) FROM conversation_messages WHERE incident_id = :incident_id AND kind = 'message'")

_STORE_SUMMARY = text(
    """
WITH new AS (
    INSERT INTO conversation_messages (incident_id, workflow_id, step_id, agent, role, kind, content, metadata,
                                       covers, dedupe_key, created_at)
    VALUES (:incident_id, :workflow_id, :step_id, :agent, 'system', 'summary', :content, CAST(:metadata AS jsonb),
            :covers, :dedupe_key, now())
    ON CONFLICT ON CONSTRAINT uq_conversation_messages_dedupe_key DO NOTHING
    RETURNING id, content
)
SELECT id, content FROM new UNION ALL SELECT id, content FROM conversation_messages WHERE dedupe_key = :dedupe_key
"""
)
_SUMMARY_BY_KEY = text("SELECT id, content FROM conversation_messages WHERE dedupe_key = :dedupe_key")

# Joined into the attempt's own statement (activities/runs.py); their parameters are prefixed snap_ / msg_.
SNAPSHOT_CTE = """
snap AS (
    INSERT INTO context_snapshots (activity_key, workflow_id, incident_id, step_id, agent, run, attempt, version,
                                   content_hash, tokens, context, created_at)
    SELECT CAST(:snap_key AS varchar), CAST(:snap_workflow_id AS varchar), CAST(:snap_incident_id AS bigint),
           CAST(:snap_step_id AS varchar), CAST(:snap_agent AS varchar), CAST(:snap_run AS integer),
           CAST(:snap_attempt AS integer),
           COALESCE((SELECT max(version) FROM context_snapshots
                     WHERE workflow_id = CAST(:snap_workflow_id AS varchar)
                       AND step_id = CAST(:snap_step_id AS varchar)), 0) + 1,
           CAST(:snap_hash AS varchar), CAST(:snap_tokens AS integer), CAST(:snap_context AS jsonb), now()
    ON CONFLICT ON CONSTRAINT uq_context_snapshots_activity_key DO NOTHING
    RETURNING id
)"""
MESSAGES_CTE = """
msgs AS (
    INSERT INTO conversation_messages (incident_id, workflow_id, step_id, agent, role, kind, content, metadata,
                                       dedupe_key, created_at)
    SELECT m.incident_id, m.workflow_id, m.step_id, m.agent, m.role, 'message', m.content, m.metadata,
           m.dedupe_key, CAST(:msg_now AS timestamptz)
    FROM jsonb_to_recordset(CAST(:msg_rows AS jsonb))
         AS m(n int, incident_id bigint, workflow_id text, step_id text, agent text, role text, content text,
              metadata jsonb, dedupe_key text)
    ORDER BY m.n
    ON CONFLICT ON CONSTRAINT uq_conversation_messages_dedupe_key DO NOTHING
    RETURNING id, incident_id, workflow_id, step_id, agent, role
)"""
# An agent's messages are announced by its step's own event (the incident page refreshes its conversation on
# step events): no event row per message on the agents' hot path. A failed attempt writes no step, so its
# message gets an event of its own; operators' messages and alerts have theirs.
MESSAGE_EVENT_CTE = """
msg_event AS (
    INSERT INTO events (at, kind, incident_id, workflow_id, step_id, data)
    SELECT CAST(:msg_now AS timestamptz), 'message.created', incident_id, workflow_id, step_id,
           jsonb_build_object('actor', agent, 'message_id', id, 'role', role, 'agent', agent)
    FROM msgs ORDER BY id
    RETURNING id
)"""


@dataclass
class Prepared:
    """An attempt's context and the bind parameters that store its snapshot."""

    context: dict[str, Any]
    snapshot: dict[str, Any]


def _message(row: dict[str, Any]) -> Message:
    return Message(
        id=int(row["id"]),
        role=row["role"],
        content=row["content"],
        agent=row.get("agent"),
        step_id=row.get("step_id"),
        created_at=str(row.get("created_at") or ""),
        kind=row.get("kind") or "message",
    )


class ConversationStore:
    """Reads and writes of conversations for agent activities (sync: called in a thread)."""

    def __init__(self, engine: Engine, *, default_budget: int, summarizer: Summarizer | None = None) -> None:
        self._engine = engine
        self._budget = default_budget
        self._summarizer = summarizer

    @property
    def asks_a_model(self) -> bool:
        """Preparing a context may wait on the model (a long conversation's summary, when an LLM is configured)."""
        return self._summarizer is not None

    def prepare(self, input: AgentInput, *, attempt: int, run_key: str, agent: str) -> Prepared:
        """Load, assemble and compress the context of one attempt; a new summary is stored as a message."""
        incident_id = input.incident.incident_id
        load = {"incident_id": incident_id, "workflow_id": input.workflow_id, "service": input.incident.service}
        [row] = autocommit_rows(self._engine, _LOAD, {**load, "limit": HISTORY_MAX, "visible": input.visible_steps})
        history = [_message(m) for m in row.messages]
        # Counted only when the window is full: the common case costs no second scan.
        total = (
            len(history)
            if len(history) < HISTORY_MAX
            else autocommit_rows(self._engine, _COUNT, {"incident_id": incident_id})[0][0]
        )
        budget = input.context_budget_tokens or self._budget
        # No connection is held while summarising: an LLM summary may take a while.
        compressed = compress(history, budget, summarizer=self._summarizer)
        summary_id = None
        if compressed.summary is not None:
            summary_id, stored = self._store_summary(input, agent, compressed)
            if stored != compressed.summary:  # another attempt stored this span's summary first: use that one
                first = dataclasses.replace(compressed.messages[0], content=stored)
                compressed = dataclasses.replace(compressed, summary=stored, messages=[first, *compressed.messages[1:]])
        users = [
            {
                "id": m.id,
                "author": (raw.get("metadata") or {}).get("author"),
                "content": m.content,
                "created_at": m.created_at,
            }
            for m, raw in zip(history, row.messages, strict=True)
            if m.role == "user"
        ]
        context = build_context(
            input,
            attempt=attempt,
            incident_row=row.incident,
            health=row.health,
            service=row.service,
            history=history,
            user_inputs=users,
            compressed=compressed,
            total_messages=int(total),
            budget=budget,
            summary_id=summary_id,
        )
        # Stored redacted (step params may carry credentials a viewer must not read), hashed as stored.
        stored = canonical(redact(context))
        snapshot = {
            "snap_key": run_key,
            "snap_workflow_id": input.workflow_id,
            "snap_incident_id": incident_id,
            "snap_step_id": input.step_id,
            "snap_agent": agent,
            "snap_run": input.run,
            "snap_attempt": attempt,
            "snap_hash": hashlib.sha256(stored.encode()).hexdigest(),
            "snap_tokens": compressed.tokens,
            "snap_context": stored,
        }
        return Prepared(context=context, snapshot=snapshot)

    def _store_summary(self, input: AgentInput, agent: str, compressed: Compressed) -> tuple[int, str]:
        """Summaries are messages too, linked to what they cover; the same span's summary is stored once.
        (its id, its text as stored)."""
        assert compressed.summary is not None
        covers = compressed.covered_ids
        key = f"summary:{input.incident.incident_id}:{compressed.summarizer}:{covers[0]}-{covers[-1]}:{len(covers)}"
        metadata = {
            "summarizer": compressed.summarizer,
            "tokens": count_tokens(compressed.summary),
            "covers_count": len(covers),
            "fallback_reason": compressed.fallback_reason,
            "for_step": input.step_id,
        }
        params = {
            "incident_id": input.incident.incident_id,
            "workflow_id": input.workflow_id,
            "step_id": input.step_id,
            "agent": agent,
            "content": compressed.summary,
            "metadata": json.dumps(metadata),
            "covers": covers,
            "dedupe_key": key[:300],
        }
        with self._engine.connect() as db:
            db = db.execution_options(isolation_level="AUTOCOMMIT")
            found = db.execute(_STORE_SUMMARY, params).first()
            if found is None:  # inserted by a parallel attempt after this statement's snapshot was taken
                found = db.execute(_SUMMARY_BY_KEY, {"dedupe_key": key[:300]}).one()
        return int(found.id), str(found.content)


def conversation_summarizer(settings: Settings) -> Summarizer | None:
    """The LLM summariser when an LLM is configured; None: the extractive one."""
    client = llm_client(settings)
    return LLMSummarizer(client) if client is not None else None


def agent_messages(
    input: AgentInput, agent: str, run_key: str, *, result: AgentResult | None, error: str | None, elapsed_ms: int
) -> list[dict[str, Any]]:
    """The rows an attempt appends: the agent's summary (assistant), what it asked to add, or its failure."""
    base = {"incident_id": input.incident.incident_id, "workflow_id": input.workflow_id, "step_id": input.step_id}
    meta = {"attempt": run_key.rsplit("/", 1)[-1], "run": input.run, "duration_ms": elapsed_ms}
    rows: list[dict[str, Any]] = []

    def add(role: str, content: str, metadata: dict[str, Any]) -> None:
        content = redact_text(content)
        if len(content) > CONTENT_MAX:
            content = content[:CONTENT_MAX] + f"… [cut: {len(content) - CONTENT_MAX} more characters]"
        rows.append(
            {
                **base,
                "n": len(rows),
                "agent": agent,
                "role": role if role in ROLES else "tool",
                "content": content,
                "metadata": {**meta, **redact(metadata), "tokens": count_tokens(content)},
                "dedupe_key": f"{run_key}/{len(rows)}"[:300],
            }
        )

    if result is None:
        add("system", f"{agent} attempt failed: {error or 'unknown error'}", {"ok": False, "error": True})
        return rows
    for extra in result.messages:
        if isinstance(extra, dict) and str(extra.get("content") or "").strip():
            add(str(extra.get("role") or "tool"), str(extra["content"]), dict(extra.get("metadata") or {}))
    add("assistant", result.summary, {"ok": result.ok})
    return rows


def message_params(rows: list[dict[str, Any]], now: Any) -> dict[str, Any]:
    return {"msg_rows": json.dumps(rows, default=str), "msg_now": now}
