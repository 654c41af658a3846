"""The context every agent receives, assembled by one function so every agent gets the same shape.

Pure: the agent activity loads the parts from Postgres (activities/conversation.py) and hands them here; the
result is what the agent reads as `input.context` and what `context_snapshots` stores, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from core.compress import Compressed, Message
from core.payloads import AgentInput

CONTEXT_SCHEMA = 1
USER_INPUTS_MAX = 20  # the newest operator messages, listed apart from the conversation too


def message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "kind": message.kind,
        "agent": message.agent,
        "step_id": message.step_id,
        "content": message.content,
        "created_at": message.created_at,
    }


def build_context(
    input: AgentInput,
    *,
    attempt: int,
    incident_row: dict[str, Any] | None,
    health: dict[str, Any] | None,
    service: dict[str, Any] | None = None,
    history: Sequence[Message],
    user_inputs: Sequence[dict[str, Any]],
    compressed: Compressed,
    total_messages: int,
    budget: int,
    summary_id: int | None,
) -> dict[str, Any]:
    """The agent's context: incident data, its step, previous agents' outputs, system state, user inputs and
    the (compressed) conversation."""
    summary = None
    if compressed.summary is not None:
        summary = {
            "message_id": summary_id,
            "covers": len(compressed.covered_ids),
            "first_id": compressed.covered_ids[0] if compressed.covered_ids else None,
            "last_id": compressed.covered_ids[-1] if compressed.covered_ids else None,
            "summarizer": compressed.summarizer,
            "fallback_reason": compressed.fallback_reason,
        }
    messages = [message_view(m) for m in compressed.messages]
    if summary_id is not None and messages and messages[0]["kind"] == "summary":
        messages[0]["id"] = summary_id
    return {
        "schema": CONTEXT_SCHEMA,
        "incident": {**asdict(input.incident), **(incident_row or {})},
        "step": {
            "id": input.step_id,
            "run": input.run,
            "attempt": attempt,
            "instructions": input.instructions,
            "params": input.params,
        },
        "previous_outputs": input.dependency_outputs,
        "system_state": {"service": input.incident.service, "health": health},
        # The monitored service's definition (check, dependencies, log paths, metrics queries), when registered.
        "service": service,
        "user_inputs": list(user_inputs)[-USER_INPUTS_MAX:],
        "conversation": {
            "workflow_id": input.workflow_id,
            "messages": messages,
            "summary": summary,
            "total": total_messages,
            "loaded": len(history),
            "tokens": compressed.tokens,
            "budget": budget,
        },
    }


def canonical(context: dict[str, Any]) -> str:
    return json.dumps(context, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(context: dict[str, Any]) -> str:
    """sha256 of the canonical JSON: what context_snapshots.content_hash holds."""
    return hashlib.sha256(canonical(context).encode()).hexdigest()
