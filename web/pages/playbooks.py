"""Playbook pages (issue 23): the list of playbooks (latest versions, filtered), one playbook's view — its
definition, its DAG drawn server-side, each step's instructions as safe markdown, params and approval settings —
with its versions; and the editor (web/pages/playbook_editor.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, select

from api.auth import Viewer, require
from api.deps import SessionDep, SettingsDep
from core.approval_rules import needs_approval
from core.identity import Team
from core.services import Service
from core.tables import PlaybookSharing, PlaybookVersion
from services.dry_runs import list_dry_runs
from services.playbook_sharing import check_view, team_names
from services.playbooks import load_playbook, visible_playbooks
from web.pages import playbook_versions
from web.pages.playbook_common import graph_of, markdown, may_create, may_edit, svg, versions_of
from web.pages.playbook_editor import PlaybookId
from web.pages.playbook_graph import join_text, steps_of
from web.run_svg import duration
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
DRY_RUNS_SHOWN = 10
Filter = Annotated[str, Query(max_length=100)]


@router.get("/playbooks", response_class=HTMLResponse)
def playbook_list(
    request: Request,
    principal: Viewer,
    session: SessionDep,
    incident_type: Filter = "",
    team: Filter = "",
    owner: Filter = "",
    service: Filter = "",
) -> HTMLResponse:
    """The latest version of every playbook the caller may see; filters by incident type, owner team, owner (who
    created it) and service (the playbooks its incidents would run)."""
    filters = {"incident_type": incident_type.strip(), "team": team.strip(), "owner": owner.strip(),
               "service": service.strip()}  # fmt: skip
    every = visible_playbooks(session=session, principal=principal)
    rows = visible_playbooks(session=session, principal=principal, **{k: v or None for k, v in filters.items()})
    sharing = {s.playbook_id: s for s in session.exec(select(PlaybookSharing)).all()}
    names = team_names(session=session, team_ids={s.owner_team_id for s in sharing.values() if s.owner_team_id})
    context = {
        "rows": rows,
        "total": len(every),
        "filters": filters,
        "incident_types": sorted({r.incident_type for r in every}),
        "teams": sorted(session.exec(select(Team.name)).all()),
        "owners": sorted(_creators(session, [r.playbook_id for r in every])),
        "services": sorted(session.exec(select(Service.name)).all()),
        "owner_team": {pid: names.get(s.owner_team_id or 0) for pid, s in sharing.items()},
        "visibility": {pid: s.visibility for pid, s in sharing.items()},
        "can_create": may_create(session, principal),
        "editable": {r.playbook_id for r in rows if may_edit(session, principal, r.playbook_id)},
    }
    return templates.TemplateResponse(request, "playbooks/list.html", context)


def _creators(session: Session, playbook_ids: list[str]) -> set[str]:
    """Who created these playbooks (stored their version 1): the owner filter's choices."""
    if not playbook_ids:
        return set()
    query = select(PlaybookVersion.created_by).where(
        PlaybookVersion.version == 1, col(PlaybookVersion.playbook_id).in_(playbook_ids)
    )
    return {name for name in session.exec(query).all() if name}


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
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    definition = playbook.model_dump(mode="json")
    versions = versions_of(session=session, principal=principal, playbook_id=playbook_id)
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
        "can_fork": bool(versions) and may_create(session, principal),
        **(playbook_versions.sharing_context(session, principal, playbook_id) if versions else {"sharing": None}),
        "saved": bool(saved),
        "duration": duration,
        "dry_runs": list_dry_runs(session=session, playbook_id=playbook_id, principal=principal, limit=DRY_RUNS_SHOWN),
    }
    return templates.TemplateResponse(request, "playbooks/view.html", context)
