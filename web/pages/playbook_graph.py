"""A playbook's DAG as inline SVG for the view and the editor (core/dag_layout.py, as the run graph draws with it):
each step a box with its id, its agent's badge and colour, its join when it has several dependencies, its `when`
condition and its approval gate, in words. A draft may be broken: a cycle is drawn with its closing edge turned
round (and named), a dependency on a step that does not exist is left out (and named)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.agent_palette import agent_style
from core.approval_rules import needs_approval
from core.dag_layout import Box, Edge, TextLine, render_svg
from core.playbook import find_cycle
from services.playbook_preview import PlaybookPreview

NODE_WIDTH = 220.0
WRAP = 28


@dataclass(frozen=True)
class GraphStep:
    """What the drawing needs of a step, from a stored definition or a draft being edited."""

    id: str
    agent: str
    depends_on: tuple[str, ...] = ()
    join: str = "all"
    join_count: int | str | None = None
    when: str = ""
    requires_approval: bool = False
    risk: str = "low"


@dataclass(frozen=True)
class DrawnGraph:
    svg: str
    problems: list[str]


def steps_of(definition: Mapping[str, Any]) -> list[GraphStep]:
    """The drawing's steps of a definition (a dict, as stored)."""
    out = []
    for raw in definition.get("steps") or []:
        join = raw.get("join") or {}
        out.append(
            GraphStep(
                id=str(raw.get("id") or ""),
                agent=str(raw.get("agent") or ""),
                depends_on=tuple(str(d) for d in raw.get("depends_on") or []),
                join=str(join.get("strategy") or "all"),
                join_count=join.get("count"),
                when=str(raw.get("when") or ""),
                requires_approval=bool(raw.get("requires_approval")),
                risk=str(raw.get("risk") or "low"),
            )
        )
    return out


def join_text(step: GraphStep) -> str:
    if step.join == "at_least":
        return f"join at least {step.join_count or '?'}"
    return f"join {step.join.replace('_', ' ')}"


def _box(step: GraphStep, node_id: str, href: str | None, extra_class: str = "", note: str = "") -> Box:
    style = agent_style(step.agent or "?")
    label = step.id or "(no id)"
    lines = [TextLine(label, "rg-title"), TextLine(step.agent or "(no agent)", "rg-agent")]
    if len(step.depends_on) > 1:
        lines.append(TextLine(join_text(step), "pb-join"))
    if step.when:
        parts = textwrap.wrap(f"when {step.when}", WRAP, max_lines=2, placeholder=" …", break_long_words=True)
        lines += [TextLine(part, "pb-when") for part in parts]
    gated = needs_approval(step.requires_approval, step.risk)
    if gated:
        lines.append(TextLine(f"⚑ approval · risk {step.risk}", "rg-mark"))
    if note:
        lines.append(TextLine(note, "pb-note"))
    tooltip = " · ".join(
        part
        for part in (
            label,
            step.agent,
            join_text(step) if len(step.depends_on) > 1 else "",
            f"when {step.when}" if step.when else "",
            f"needs approval (risk {step.risk})" if gated else f"risk {step.risk}",
            note,
        )
        if part
    )
    classes = " ".join(
        c for c in ("rg-node", "pb-node", f"agent-c{style.slot}", "pb-gated" if gated else "", extra_class) if c
    )
    return Box(
        id=node_id,
        lines=tuple(lines),
        href=href,
        classes=classes,
        title=tooltip,
        badge=style.badge,
        width=NODE_WIDTH,
        label=f"step {tooltip}",
    )


def draw(
    steps: Sequence[GraphStep],
    *,
    label: str,
    href_of: Any = None,
    id_prefix: str = "pb",
    classes_of: Any = None,
    note_of: Any = None,
) -> DrawnGraph:
    """The steps as SVG markup (escaped by the renderer) and what is wrong with their dependencies.
    `href_of(index, step)` gives each box's link (None: no link); `classes_of(step)` more classes for its box and
    `note_of(step)` one more line of text (a preview's outcome)."""
    problems: list[str] = []
    node_ids: list[str] = []
    first: dict[str, str] = {}
    for index, step in enumerate(steps):
        node_id = step.id if step.id and step.id not in first else f"#{index + 1}"
        node_ids.append(node_id)
        if step.id and step.id not in first:
            first[step.id] = node_id
        elif step.id:
            problems.append(f"step {step.id}: duplicate id")
    edges: list[Edge] = []
    seen: set[tuple[str, str]] = set()
    for step, node_id in zip(steps, node_ids, strict=True):
        for dep in step.depends_on:
            source = first.get(dep)
            if source is None:
                problems.append(f"step {step.id}: depends on unknown step {dep!r}")
            elif (source, node_id) not in seen:
                seen.add((source, node_id))
                edges.append(Edge(source, node_id, "pb-edge-conditional" if step.when else ""))
    cycle = find_cycle({s.id: [d for d in s.depends_on if d in first] for s in steps if s.id})
    if cycle:
        problems.append(f"step {cycle[0]}: dependency cycle {' → '.join(cycle)}")
    boxes = [
        _box(
            step,
            node_id,
            href_of(index, step) if href_of else None,
            classes_of(step) if classes_of else "",
            note_of(step) if note_of else "",
        )
        for index, (step, node_id) in enumerate(zip(steps, node_ids, strict=True))
    ]
    svg = render_svg(
        boxes, edges, label=label, id_prefix=id_prefix, classes="rungraph pbgraph", on_cycle="break"
    ) if boxes else ""  # fmt: skip
    return DrawnGraph(svg=svg, problems=problems)


OUTCOME = {"runs": "runs", "skipped": "skipped", "fails": "fails (join cannot succeed)", "never": "never starts"}


def preview_graph(preview: PlaybookPreview) -> Any:
    """A preview's DAG, each step marked with what the preview found it would do (runs, skipped, …)."""
    steps = []
    for s in preview.steps:
        strategy, _, count = s.join.partition(" ")
        steps.append(GraphStep(id=s.id, agent=s.agent, depends_on=tuple(s.depends_on), join=strategy or "all",
                               join_count=count or None, when=s.when or "", requires_approval=s.requires_approval,
                               risk=s.risk))  # fmt: skip
    outcomes = {s.id: s.outcome for s in preview.steps}
    return draw(
        steps,
        label=f"Preview of {preview.playbook_id} v{preview.version}",
        href_of=lambda _i, step: f"#preview-{step.id}",
        id_prefix="preview",
        classes_of=lambda step: f"pb-outcome-{outcomes.get(step.id, 'runs')}",
        note_of=lambda step: "" if outcomes.get(step.id) == "runs" else f"↷ {OUTCOME[outcomes[step.id]]}",
    )
