"""What every agent of ours builds on: the dependencies the worker hands it, and how it shapes its result. Agents
import this, and the registry imports the agents (no cycle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine

from core.payloads import AgentResult
from core.redact import redact, redact_text
from core.settings import Settings


@dataclass
class AgentDeps:
    """What the worker hands every agent: its guarded HTTP client, the settings and its database (None: an agent
    run outside a worker)."""

    http: httpx.AsyncClient
    settings: Settings
    engine: Engine | None = None


def agent_result(
    ok: bool,
    summary: str,
    *,
    data: dict[str, Any] | None = None,
    findings: list[dict[str, Any]] | None = None,
    resolved: bool | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> AgentResult:
    """An agent's result with secrets redacted, before it enters workflow history or storage."""
    return AgentResult(
        ok=ok,
        summary=redact_text(summary),
        data=redact(data or {}),
        findings=redact(findings or []),
        resolved=resolved,
        messages=redact(messages or []),
    )
