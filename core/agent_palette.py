"""One colour and one badge per agent, the same on every page (the chat view, the run graph, the timeline).

Colour is never the only cue: every use shows the badge (two letters) and the agent's name too. Each entry is an
ink colour for text and borders on white and a tint behind the badge's text; both pairs pass WCAG 2.x AA for
normal text (contrast ≥ 4.5:1, checked in tests/core/test_agent_palette.py). Built-in agents have fixed slots, so
the investigators never share a colour; any other agent's slot comes from a stable hash of its name (never
Python's per-process `hash`), so it is the same in every web process and after a restart.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class AgentStyle:
    slot: int  # CSS class agent-c{slot} (web/static/app.css)
    ink: str  # text and border colour on white
    tint: str  # background behind ink-coloured text
    badge: str  # two letters, shown with the colour


# (ink, tint): ink on white and ink on tint both ≥ 4.5:1.
PALETTE: tuple[tuple[str, str], ...] = (
    ("#0b5cad", "#e3efff"),  # blue
    ("#1a6b35", "#e2f5e7"),  # green
    ("#8a4a00", "#fff0dc"),  # amber
    ("#a1222d", "#ffe5e7"),  # red
    ("#6a3fb5", "#f0e9ff"),  # violet
    ("#0a6672", "#dff5f7"),  # teal
    ("#9c2a78", "#fde6f5"),  # magenta
    ("#4d5a12", "#eef3d9"),  # olive
    ("#37474f", "#e9eef1"),  # slate
    ("#8b3d1b", "#fbe9e0"),  # rust
)

BUILT_IN_SLOTS = {
    "monitor": 0,
    "investigate_logs": 1,
    "investigate_metrics": 2,
    "investigate_dependencies": 4,
    "remediate_command": 3,
    "remediate_webhook": 9,
    "verify": 5,
    "llm": 6,
    "summarise": 8,
    "noop": 7,
}


def _badge(name: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    if not words:
        return "?"
    if len(words) == 1:
        return words[0][:2].capitalize()
    return (words[0][0] + words[-1][0]).upper()


def agent_style(name: str | None) -> AgentStyle:
    """The style of an agent by name; people and the system (name None or empty) get the slate slot."""
    if not name:
        ink, tint = PALETTE[8]
        return AgentStyle(slot=8, ink=ink, tint=tint, badge="—")
    slot = BUILT_IN_SLOTS.get(name)
    if slot is None:
        slot = zlib.crc32(name.encode()) % len(PALETTE)
    ink, tint = PALETTE[slot]
    return AgentStyle(slot=slot, ink=ink, tint=tint, badge=_badge(name))


def palette_css() -> str:
    """The CSS classes agent-c0 … agent-cN (written into web/static/app.css; a test keeps them in step)."""
    return "\n".join(
        f".agent-c{i} {{ --agent-ink: {ink}; --agent-tint: {tint}; }}" for i, (ink, tint) in enumerate(PALETTE)
    )
