"""A run graph (services/run_graph.py) as boxes and edges for core/dag_layout.py: what each node says and which
classes colour it. Colour is never the only cue: each node shows its step id, its agent's badge and name, its
status as a word with a symbol, and its marks (approval, run-time changes) in words."""

from __future__ import annotations

import textwrap
from urllib.parse import quote, urlencode

from core.agent_palette import agent_style
from core.dag_layout import Box, Edge, TextLine, render_svg
from services.run_graph import RunGraph, RunNode

NODE_WIDTH = 230.0
WRAP = 29  # characters of a wrapped line in a node that wide (core/dag_layout.py CHAR_WIDTH)
SYMBOL = {
    "completed": "✓",
    "failed": "✗",
    "running": "▶",
    "waiting_approval": "‖",
    "pending": "○",
    "skipped": "↷",
    "cancelled": "⊘",
    "removed": "✕",
}


def duration(seconds: float | None) -> str:
    """1.2 s, 3 min 4 s, 2 h 5 min; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 0.1:
        return "< 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def status_text(node: RunNode) -> str:
    """The node's status in words: "cancelled by join", "waiting approval", …"""
    if node.cancelled_by_join:
        return "cancelled by join"
    if node.removed:
        return "removed"
    return node.status.replace("_", " ")


def skip_reason(node: RunNode) -> str | None:
    """Why a skipped step was skipped: its `when` condition that was false, or the note (a dependency failed)."""
    if node.status != "skipped":
        return None
    if node.note and node.note.startswith("condition is false") and node.when:
        return f"when {node.when} → false"
    return node.note or (f"when {node.when}" if node.when else None)


def marks(node: RunNode) -> list[str]:
    """The node's marks in words: approval gate, run-time changes, retries."""
    found = []
    if node.approval is not None:
        found.append(f"⚑ approval {node.approval['status']}")
    elif node.gated:
        found.append("⚑ needs approval")
    if node.added:
        found.append("+ added at run time")
    if node.params_edited:
        found.append("✎ params edited")
    if node.removed:
        found.append("✕ removed at run time")
    return found


def step_href(graph: RunGraph, step_id: str) -> str:
    return f"/incidents/{graph.incident_id}/run/steps/{quote(step_id)}?{urlencode({'workflow': graph.workflow_id})}"


def node_classes(node: RunNode) -> str:
    style = agent_style(node.agent)
    flags = [
        f"agent-c{style.slot}",
        f"rg-{'removed' if node.removed else node.status}",
        "rg-join-cancel" if node.cancelled_by_join else "",
        "rg-added" if node.added else "",
        "rg-edited" if node.params_edited else "",
        "rg-gated" if node.gated else "",
    ]
    return " ".join(["rg-node", *(f for f in flags if f)])


def _wrap(text: str) -> list[str]:
    """Why a step was skipped, cancelled or failed, on up to three lines of the box (the tooltip has it all)."""
    parts = textwrap.wrap(text, WRAP, max_lines=3, placeholder=" …", break_long_words=True)
    return parts or [text]


def _box(graph: RunGraph, node: RunNode) -> Box:
    style = agent_style(node.agent)
    when = duration(node.duration_seconds)
    status = f"{SYMBOL.get(node.status if not node.removed else 'removed', '•')} {status_text(node)}"
    lines = [
        TextLine(node.step_id, "rg-title"),
        TextLine(node.agent + (f" · join {node.join}" if len(node.depends_on) > 1 else ""), "rg-agent"),
        TextLine(status + (f" · {when}" if when else ""), "rg-status"),
    ]
    if node.attempt > 1 or node.runs > 1:
        lines.append(TextLine(f"attempt {node.attempt} · run {node.runs}", "rg-muted"))
    reason = skip_reason(node) or (node.note if node.status == "cancelled" else None)
    if reason:
        lines += [TextLine(part, "rg-muted") for part in _wrap(reason)]
    elif node.status == "failed" and node.error:
        lines += [TextLine(part, "rg-error") for part in _wrap(node.error)]
    lines += [TextLine(m, "rg-mark") for m in marks(node)]
    tooltip = " · ".join(
        part
        for part in (node.step_id, node.agent, status_text(node), when, reason or node.error or "", *marks(node))
        if part
    )
    return Box(
        id=node.step_id,
        lines=tuple(lines),
        href=step_href(graph, node.step_id),
        classes=node_classes(node),
        title=tooltip,
        badge=style.badge,
        width=NODE_WIDTH,
        label=f"step {tooltip}",
    )


def _compact(graph: RunGraph, node: RunNode) -> Box:
    style = agent_style(node.agent)
    status = f"{SYMBOL.get(node.status if not node.removed else 'removed', '•')} {status_text(node)}"
    return Box(
        id=node.step_id,
        lines=(TextLine(node.step_id, "rg-title"), TextLine(status, "rg-status")),
        href=step_href(graph, node.step_id),
        classes=node_classes(node),
        title=f"{node.step_id} · {node.agent} · {status_text(node)}",
        badge=style.badge,
        width=150.0,
    )


def _edges(graph: RunGraph) -> list[Edge]:
    by_id = {n.step_id: n for n in graph.nodes}
    edges = []
    for source, target in graph.edges:
        cls = []
        if by_id[source].removed or by_id[target].removed:
            cls.append("rg-edge-removed")
        if by_id[target].status in ("skipped", "cancelled"):
            cls.append("rg-edge-idle")
        edges.append(Edge(source, target, " ".join(cls)))
    return edges


def run_svg(graph: RunGraph, *, compact: bool = False, id_prefix: str = "rg") -> str:
    """The run graph as inline SVG markup (every text escaped by the renderer)."""
    make = _compact if compact else _box
    boxes = [make(graph, n) for n in graph.nodes]
    label = f"Run graph of {graph.workflow_id}: {len(graph.nodes)} steps, {graph.status}"
    return render_svg(
        boxes,
        _edges(graph),
        label=label,
        id_prefix=id_prefix,
        classes="rungraph" + (" rungraph-compact" if compact else ""),
    )
