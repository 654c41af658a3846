"""A playbook's dry run (issue 23): a banner that says nothing was changed, the run graph drawn from the stored
state (services/run_graph.build_graph, core/dag_layout.py) in dry-run words — ran read-only, would run, skipped,
would ask —, and the per-step report; refreshed live on `dryrun.updated` events while the run goes on."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlmodel import Session

from api.auth import Viewer, require
from api.deps import EngineDep, Int64Id, SettingsDep
from core.agent_palette import agent_style
from core.dag_layout import Box, Edge, TextLine, render_svg
from core.dry_run_report import summary_items
from core.payloads import WorkflowState
from core.playbook import Playbook
from core.playbook_store import PlaybookNotFound, load_playbook
from core.settings import Settings
from core.tables import PlaybookDryRun
from services.dry_runs import dry_run_public, get_dry_run
from services.incidents.detail import in_session
from services.run_graph import RunGraph, RunNode, build_graph
from web.run_svg import NODE_WIDTH, node_classes
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])

# How each step's outcome in the report reads on the graph (a symbol and words: colour is never the only cue).
OUTCOME_WORDS = {
    "ran_read_only": "✓ ran read-only",
    "would_run": "◇ would run",
    "skipped": "↷ skipped",
    "error": "✗ error",
    "cancelled": "⊘ cancelled",
    "pending": "○ pending",
    "running": "▶ running",
}
APPROVAL_WORDS = {
    "would_ask": "⚑ would ask for approval",
    "would_auto_approve": "⚑ would auto-approve",
    "would_reject": "⚑ would be rejected",
}


def _graph(row: PlaybookDryRun, playbook: Playbook | None) -> RunGraph | None:
    if not row.state:
        return None
    state = msgspec.convert(row.state, WorkflowState)
    return build_graph(state, playbook, live=False, source="the dry run's record")


def _box(node: RunNode, step: dict[str, Any]) -> Box:
    style = agent_style(node.agent)
    outcome = OUTCOME_WORDS.get(step["outcome"], step["outcome"])
    lines = [
        TextLine(node.step_id, "rg-title"),
        TextLine(node.agent + (f" · join {node.join}" if len(node.depends_on) > 1 else ""), "rg-agent"),
        TextLine(outcome, "rg-status"),
    ]
    if step.get("approval_outcome"):
        lines.append(TextLine(APPROVAL_WORDS.get(step["approval_outcome"], "⚑"), "rg-mark"))
    if step["outcome"] == "skipped" and node.when:
        lines.append(TextLine(f"when {node.when}"[:60], "rg-muted"))
    classes = node_classes(node) + f" dr-{step['outcome']}"
    title = " · ".join(p for p in (node.step_id, node.agent, outcome, step.get("text") or "") if p)
    return Box(
        id=node.step_id,
        lines=tuple(lines),
        href=f"#step-{node.step_id}",
        classes=classes,
        title=title[:500],
        badge=style.badge,
        width=NODE_WIDTH,
        label=f"step {title[:300]}",
    )


def dry_run_svg(graph: RunGraph, report: dict[str, Any]) -> str:
    """The run graph in a dry run's words; each node links to its row of the report below it."""
    steps = {s["step_id"]: s for s in report.get("steps", [])}
    blank = {"outcome": "pending", "text": "", "approval_outcome": None}
    boxes = [_box(n, steps.get(n.step_id, blank)) for n in graph.nodes]
    edges = [Edge(a, b, "rg-edge-idle" if steps.get(b, blank)["outcome"] == "skipped" else "") for a, b in graph.edges]
    label = f"Dry run {graph.workflow_id}: {len(graph.nodes)} steps, {graph.status}"
    return render_svg(boxes, edges, label=label, id_prefix="dr", classes="rungraph dryrun-graph")


def _context(session: Session, settings: Settings, principal: Any, dry_run_id: int) -> dict[str, Any]:
    row = get_dry_run(session=session, dry_run_id=dry_run_id, principal=principal)
    try:
        playbook: Playbook | None = load_playbook(
            session=session, settings=settings, playbook_id=row.playbook_id, version=row.playbook_version
        )
    except PlaybookNotFound:
        playbook = None
    graph = _graph(row, playbook)
    report = row.report or {"steps": [], "summary": {}}
    svg = Markup(dry_run_svg(graph, report)) if graph and graph.nodes else None  # noqa: S704 (the renderer escapes)
    summary = summary_items(report.get("summary") or {})
    return {
        "dry": dry_run_public(row),
        "graph": graph,
        "report": report,
        "summary": summary,
        "svg": svg,
        "pretty": _pretty,
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@router.get("/dry-runs/{dry_run_id}", response_class=HTMLResponse)
async def dry_run_page(
    request: Request, dry_run_id: Int64Id, principal: Viewer, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    context = await in_session(engine, lambda session: _context(session, settings, principal, dry_run_id))
    return templates.TemplateResponse(request, "dry_runs/detail.html", context)


@router.get("/dry-runs/{dry_run_id}/body", response_class=HTMLResponse)
async def dry_run_body(
    request: Request, dry_run_id: Int64Id, principal: Viewer, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    """The graph and the report alone: what the page swaps in on live `dryrun.updated` events."""
    context = await in_session(engine, lambda session: _context(session, settings, principal, dry_run_id))
    return templates.TemplateResponse(request, "dry_runs/_body.html", context)
