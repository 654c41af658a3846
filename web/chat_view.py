"""The chat view of an incident's conversation: messages grouped by step and attempt, rendered for the page.

A step's attempt is one group wherever its messages fall in the log (parallel steps interleave); messages
without a step (operators, alerts, monitors) group with their neighbours of the same kind only. chat.js appends
new messages by the same rule: a group with the same `merge_key` takes them — anywhere for a step's attempt, only
as the last group for the rest — else a new group follows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from markupsafe import Markup

from core.conversations import ConversationMessage
from core.markdown import render_markdown

GroupKind = Literal["step", "people", "tool", "system"]
EXCERPT = 120  # characters of a collapsed tool message's first line


@dataclass
class ChatMessage:
    id: int
    step_id: str | None
    agent: str | None
    role: str
    kind: str
    content: str
    meta: dict[str, Any]
    covers: int  # how many messages a summary stands in for
    created_at: datetime
    score: float | None = None  # a semantic search's similarity

    @property
    def collapsed(self) -> bool:
        """Tool output (logs, queries, command output) is data: folded until asked for."""
        return self.role == "tool"

    @property
    def html(self) -> Markup:
        """Markdown, safely (as comments: raw HTML escaped, then sanitised); tool output stays plain text."""
        return Markup(render_markdown(self.content))  # noqa: S704 — sanitised by core.markdown (nh3)

    @property
    def excerpt(self) -> str:
        first = next((line.strip() for line in self.content.splitlines() if line.strip()), "")
        return first if len(first) <= EXCERPT else first[: EXCERPT - 1] + "…"

    @property
    def author(self) -> str:
        return str(self.meta.get("author") or self.agent or self.role)

    @property
    def failed(self) -> bool:
        return self.role == "system" and self.meta.get("ok") is False


@dataclass
class ChatGroup:
    kind: GroupKind
    merge_key: str  # what appended messages match (see the module's docstring)
    key: str  # unique and stable: the id under which the reader's open/closed choice is remembered
    step_id: str | None = None
    agent: str | None = None
    run: int | None = None
    attempt: str | None = None
    messages: list[ChatMessage] = field(default_factory=list)

    @property
    def dom_id(self) -> str:
        return "group-" + hashlib.sha256(self.key.encode()).hexdigest()[:12]

    @property
    def merge(self) -> Literal["any", "last"]:
        return "any" if self.kind == "step" else "last"

    @property
    def started(self) -> datetime:
        return self.messages[0].created_at

    @property
    def ended(self) -> datetime:
        return self.messages[-1].created_at

    @property
    def authors(self) -> list[str]:
        return list(dict.fromkeys(m.author for m in self.messages))

    @property
    def failed(self) -> bool:
        return any(m.failed for m in self.messages)


@dataclass
class ChatView:
    groups: list[ChatGroup]
    last_id: int  # appends fetch what came after this id
    agents: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(g.messages) for g in self.groups)


def chat_message(row: ConversationMessage | dict[str, Any]) -> ChatMessage:
    """A stored message, or one as services.conversations.search_messages answers it (with its score)."""
    if isinstance(row, ConversationMessage):
        assert row.id is not None
        return ChatMessage(
            id=row.id,
            step_id=row.step_id,
            agent=row.agent,
            role=row.role,
            kind=row.kind,
            content=row.content,
            meta=row.meta or {},
            covers=len(row.covers or ()),
            created_at=row.created_at,
        )
    score = row.get("similarity")  # a keyword rank means little to a reader: only similarity is shown
    return ChatMessage(
        id=row["id"],
        step_id=row["step_id"],
        agent=row["agent"],
        role=row["role"],
        kind=row["kind"],
        content=row["content"],
        meta=row["metadata"] or {},
        covers=len(row["covers"] or ()),
        created_at=datetime.fromisoformat(row["created_at"]),
        score=float(score) if score is not None else None,
    )


def _group_of(message: ChatMessage) -> ChatGroup:
    if message.step_id:
        run = message.meta.get("run")
        run = run if isinstance(run, int) else None
        attempt = message.meta.get("attempt")
        attempt = str(attempt) if attempt is not None else None  # None: a context summary before an attempt
        key = f"s:{message.step_id}:{run or '-'}:{attempt or '-'}"
        return ChatGroup("step", key, key, message.step_id, message.agent, run, attempt)
    kind: GroupKind = "people" if message.role == "user" else "tool" if message.role == "tool" else "system"
    return ChatGroup(kind, f"f:{kind}", f"f:{kind}:{message.id}")


def group_messages(messages: list[ChatMessage]) -> list[ChatGroup]:
    """Messages (oldest first) in groups, each group placed where its first message is."""
    groups: list[ChatGroup] = []
    by_step: dict[str, ChatGroup] = {}
    for message in messages:
        group = _group_of(message)
        if group.kind == "step":
            group = by_step.setdefault(group.merge_key, group)
            if not group.messages:
                groups.append(group)
        elif groups and groups[-1].merge_key == group.merge_key:
            group = groups[-1]
        else:
            groups.append(group)
        if group.agent is None and message.agent:
            group.agent = message.agent
        group.messages.append(message)
    return groups


def chat_view(messages: list[Any], last_id: int | None = None) -> ChatView:
    """The chat of these messages (oldest first); the Jinja global the incident page's partial calls with the
    messages it was given, so the incident page needs nothing else."""
    shown = [chat_message(m) for m in messages]
    groups = group_messages(shown)
    agents = sorted({m.agent for m in shown if m.agent})
    steps = sorted({m.step_id for m in shown if m.step_id})
    newest = max((m.id for m in shown), default=0)
    return ChatView(groups, last_id if last_id is not None else newest, agents, steps)
