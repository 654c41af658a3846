"""Playbook pages (issue 23): the list of playbooks (latest versions, filtered), one playbook's view — its
definition, its DAG drawn server-side, each step's instructions as safe markdown, params and approval settings —
with its versions; and the editor (web/pages/playbook_editor.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.auth import Viewer, require
from api.deps import SessionDep, SettingsDep
from core.approval_rules import needs_approval
from services.playbooks import latest_playbooks, load_playbook
from web.pages import playbook_editor
from web.pages.playbook_common import graph_of, markdown, may_edit, svg, versions_of
from web.pages.playbook_editor import PlaybookId
from web.pages.playbook_graph import join_text, steps_of
from web.run_svg import duration
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
router.include_router(playbook_editor.router)  # first: /playbooks/_new and /playbooks/_draft/… are not ids
Filter = Annotated[str, Query(max_length=100)]


@router.get("/playbooks", response_class=HTMLResponse)
def playbook_list(
    request: Request,
    principal: Viewer,
    session: SessionDep,
    incident_type: Filter = "",
    owner: Filter = "",
) -> HTMLResponse:
    """The latest version of every playbook; filters by incident type and by who saved it last."""
    rows = latest_playbooks(session=session)
    incident_type, owner = incident_type.strip(), owner.strip()
    shown = [
        row
        for row in rows
        if (not incident_type or row.incident_type == incident_type) and (not owner or row.created_by == owner)
    ]
    context = {
        "rows": shown,
        "total": len(rows),
        "filters": {"incident_type": incident_type, "owner": owner},
        "incident_types": sorted({r.incident_type for r in rows}),
        "owners": sorted({r.created_by for r in rows if r.created_by}),
        "can_create": may_edit(session, principal, None),
    }
    return templates.TemplateResponse(request, "playbooks/list.html", context)


def _step_view(raw: dict[str, Any]) -> dict[str, Any]:
    """What the view shows of a step, beside its raw fields."""
    join = raw.get("join") or {}
    retry = raw.get("retry") or {}
    graph_step = next(iter(steps_of({"steps": [raw]})))
    return {
        **raw,
        "gated": needs_approval(bool(raw.get("requires_approval")), str(raw.get("risk") or "low")),
        "join_text": join_text(graph_step) if len(raw.get("depends_on") or []) > 1 else "",
        "join_strategy": join.get("strategy", "all"),
        "retry_text": (
            f"{retry.get('max_attempts', 3)} attempts, {duration(retry.get('initial_interval_seconds', 1.0))} "
            f"first interval ×{retry.get('backoff', 2.0)}, at most {duration(retry.get('max_interval_seconds', 60))}"
        ),
    }


@router.get("/playbooks/{playbook_id}", response_class=HTMLResponse)
def playbook_view(
    request: Request,
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    version: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    saved: Annotated[int, Query(ge=0, le=1)] = 0,
) -> HTMLResponse:
    """One version of a playbook (the latest unless `version`), its graph, steps and versions."""
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    definition = playbook.model_dump(mode="json")
    versions = versions_of(session=session, playbook_id=playbook_id)
    current = next((v for v in versions if v.version == playbook.version), None)
    drawn = graph_of(definition, link_steps=True)
    context = {
        "playbook": playbook,
        "definition": definition,
        "steps": [_step_view(s) for s in definition["steps"]],
        "versions": versions,
        "current": current,
        "latest": versions[0].version if versions else playbook.version,
        "graph_svg": svg(drawn),
        "markdown": markdown,
        "can_edit": may_edit(session, principal, playbook_id),
        "saved": bool(saved),
        "duration": duration,
    }
    return templates.TemplateResponse(request, "playbooks/view.html", context)
