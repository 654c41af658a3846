"""The run graph pages (issue 22): an incident's run as it actually ran (inline SVG, no JavaScript needed), one
step's detail (its messages, context snapshots, input, output, attempts, approvals), the graph partial htmx
refreshes on live events, and the incident's runs side by side."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from api.auth import require
from api.deps import EngineDep, Int64Id, SettingsDep, TemporalDep
from services.incidents.detail import get_incident, in_session
from services.run_graph import RunGraph, compare, load_run, load_runs, run_ids, step_detail
from web.run_svg import SYMBOL, duration, marks, run_svg, skip_reason, status_text, step_href
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
WorkflowParam = Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]
StepParam = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


def pretty(value: Any) -> str:
    """JSON for people (escaped by the template like any other text)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


HELPERS = {
    "pretty": pretty,
    "duration": duration,
    "status_text": status_text,
    "skip_reason": skip_reason,
    "marks": marks,
    "symbol": SYMBOL,
    "step_href": step_href,
}


async def _runs(engine: EngineDep, incident_id: int) -> tuple[Any, list[str]]:
    def read(session: Any) -> tuple[Any, list[str]]:
        incident = get_incident(session=session, incident_id=incident_id)
        ids = run_ids(session=session, incident=incident)
        session.expunge(incident)
        return incident, ids

    return await in_session(engine, read)


def _graph_context(graph: RunGraph) -> dict[str, Any]:
    return {"graph": graph, "svg": Markup(run_svg(graph)), **HELPERS}  # noqa: S704 (the renderer escapes every text)


@router.get("/incidents/{incident_id}/run", response_class=HTMLResponse)
async def run_page(
    request: Request,
    incident_id: Int64Id,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    workflow: WorkflowParam = None,
) -> HTMLResponse:
    incident, runs = await _runs(engine, incident_id)
    graph = await load_run(
        engine=engine, temporal=temporal, settings=settings, incident_id=incident_id, workflow_id=workflow
    )
    context = {"incident": incident, "runs": runs, **_graph_context(graph)}
    return templates.TemplateResponse(request, "runs/run.html", context)


@router.get("/incidents/{incident_id}/run/graph", response_class=HTMLResponse)
async def run_graph_partial(
    request: Request,
    incident_id: Int64Id,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    workflow: WorkflowParam = None,
) -> HTMLResponse:
    """The graph alone: what the run page swaps in on live step and workflow events."""
    graph = await load_run(
        engine=engine, temporal=temporal, settings=settings, incident_id=incident_id, workflow_id=workflow
    )
    return templates.TemplateResponse(request, "runs/_graph.html", _graph_context(graph))


@router.get("/incidents/{incident_id}/run/steps/{step_id}", response_class=HTMLResponse)
async def step_page(
    request: Request,
    incident_id: Int64Id,
    step_id: StepParam,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    workflow: WorkflowParam = None,
) -> HTMLResponse:
    """One step's detail: a page of its own, or (asked by htmx) the run page's side panel."""
    graph = await load_run(
        engine=engine, temporal=temporal, settings=settings, incident_id=incident_id, workflow_id=workflow
    )
    detail = await in_session(engine, lambda session: step_detail(session=session, graph=graph, step_id=step_id))
    context = {"graph": graph, "detail": detail, "node": detail.node, **HELPERS}
    if request.headers.get("HX-Request") == "true":
        return templates.TemplateResponse(request, "runs/_step.html", context)
    incident, _ = await _runs(engine, incident_id)
    return templates.TemplateResponse(request, "runs/step.html", {**context, "incident": incident})


@router.get("/incidents/{incident_id}/runs/compare", response_class=HTMLResponse)
async def compare_page(
    request: Request, incident_id: Int64Id, engine: EngineDep, temporal: TemporalDep, settings: SettingsDep
) -> HTMLResponse:
    """The incident's runs side by side: per step, its status, attempts, duration and summary in each run."""
    incident, _ = await _runs(engine, incident_id)
    graphs = await load_runs(engine=engine, temporal=temporal, settings=settings, incident_id=incident_id)
    svgs = [
        Markup(run_svg(g, compact=True, id_prefix=f"cmp{k}"))  # noqa: S704 (the renderer escapes every text)
        for k, g in enumerate(graphs)
    ]
    context = {"incident": incident, "graphs": graphs, "svgs": svgs, "rows": compare(graphs), **HELPERS}
    return templates.TemplateResponse(request, "runs/compare.html", context)
