"""A playbook's versions from its pages (issue 23): the diff between any two versions, restore (a new version equal
to an old one), fork (any version under a new id, its provenance kept) and sharing (owner team, visibility).
Every change goes through services/playbooks.py and services/playbook_sharing.py, as the API's does: the same
rights, the same audit rows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.auth import Viewer, actor_of, require
from api.deps import SessionDep
from core.errors import Conflict, Forbidden, Invalid
from core.tables import PLAYBOOK_VISIBILITIES
from services.playbook_sharing import check_view, set_sharing
from services.playbooks import diff_versions, fork_playbook, restore_version, version_row
from web.pages.playbook_common import may_create, may_edit, sharing_text, team_choices, versions_of
from web.pages.playbook_editor import MAX_FIELDS, PlaybookId
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
Version = Annotated[int | None, Query(ge=1, le=1_000_000)]


def diff_class(line: str) -> str:
    """How a unified diff line is drawn: added, removed, a hunk header or the files' names, else context."""
    if line.startswith(("+++", "---")):
        return "diff-file"
    if line.startswith("@@"):
        return "diff-hunk"
    return {"+": "diff-add", "-": "diff-del"}.get(line[:1], "diff-ctx")


@router.get("/playbooks/{playbook_id}/diff", response_class=HTMLResponse)
def diff_page(
    request: Request, playbook_id: PlaybookId, principal: Viewer, session: SessionDep, a: Version = None,
    b: Version = None,
) -> HTMLResponse:  # fmt: skip
    """Version a against version b (default: the one before the latest against the latest)."""
    versions = versions_of(session=session, principal=principal, playbook_id=playbook_id)
    numbers = [v.version for v in versions]  # newest first
    if not numbers:
        raise Invalid(f"playbook {playbook_id} has no stored versions to compare")
    new = b if b is not None else numbers[0]
    old = a if a is not None else next((n for n in numbers if n < new), new)
    lines = diff_versions(session=session, playbook_id=playbook_id, a=old, b=new, principal=principal)
    context = {
        "playbook_id": playbook_id,
        "versions": versions,
        "a": old,
        "b": new,
        "lines": [(diff_class(line), line) for line in lines],
        "added": sum(1 for line in lines if diff_class(line) == "diff-add"),
        "removed": sum(1 for line in lines if diff_class(line) == "diff-del"),
    }
    return templates.TemplateResponse(request, "playbooks/diff.html", context)


@router.post("/playbooks/{playbook_id}/restore", response_class=HTMLResponse)
def restore(
    request: Request,
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    version: Annotated[int, Form(ge=1, le=1_000_000)],
) -> Response:
    """A new version equal to `version` ("restored from vN"), then its page."""
    stored = restore_version(session=session, actor=actor_of(request, principal), playbook_id=playbook_id,
                             version=version, principal=principal)  # fmt: skip
    session.commit()
    where = f"/playbooks/{stored.id}?version={stored.version}&saved=1"
    return RedirectResponse(where, status_code=status.HTTP_303_SEE_OTHER)


def _fork_form(
    request: Request, session: Any, principal: Any, playbook_id: str, values: dict[str, Any], errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:  # fmt: skip
    context = {
        "playbook_id": playbook_id,
        "versions": versions_of(session=session, principal=principal, playbook_id=playbook_id),
        "teams": team_choices(session, principal),
        "may_leave_team": principal.role == "admin",
        "values": values,
        "errors": errors,
    }
    return templates.TemplateResponse(request, "playbooks/fork.html", context, status_code=status_code)


@router.get("/playbooks/{playbook_id}/fork", response_class=HTMLResponse)
def fork_page(
    request: Request, playbook_id: PlaybookId, principal: Viewer, session: SessionDep, version: Version = None
) -> HTMLResponse:
    """The fork form: which version, the new id and name, the new owner team."""
    if not may_create(session, principal):
        raise Forbidden(f"{principal.username} ({principal.role}) may not create playbooks")
    row = version_row(session=session, playbook_id=playbook_id, version=version)
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    values = {"version": row.version, "new_id": f"{playbook_id}-copy", "new_name": f"{row.name} (fork)",
              "owner_team": "", "message": ""}  # fmt: skip
    return _fork_form(request, session, principal, playbook_id, values, {})


@router.post("/playbooks/{playbook_id}/fork", response_class=HTMLResponse)
async def fork(request: Request, playbook_id: PlaybookId, principal: Viewer, session: SessionDep) -> Response:
    form = await request.form(max_fields=MAX_FIELDS)
    values = {k: str(form.get(k, "")).strip() for k in ("version", "new_id", "new_name", "owner_team", "message")}
    errors: dict[str, str] = {}
    version = int(values["version"]) if values["version"].isdigit() else None
    try:
        stored = fork_playbook(
            session=session, actor=actor_of(request, principal), source_id=playbook_id, version=version,
            new_id=values["new_id"], new_name=values["new_name"] or None, principal=principal,
            owner_team=values["owner_team"] or None, message=values["message"] or None,
        )  # fmt: skip
    except (Invalid, Conflict, Forbidden) as err:
        session.rollback()
        message = str(err)
        field = message.split(":", 1)[0]
        field = {"id": "new_id", "fork": "new_id", "name": "new_name"}.get(field, field)
        if isinstance(err, Forbidden) and field != "owner_team":
            raise
        errors[field if field in values else "_general"] = message
        return _fork_form(request, session, principal, playbook_id, values, errors, err.status)
    session.commit()
    where = f"/playbooks/{stored.id}?version={stored.version}&saved=1"
    return RedirectResponse(where, status_code=status.HTTP_303_SEE_OTHER)


@router.post("/playbooks/{playbook_id}/sharing", response_class=HTMLResponse)
async def change_sharing(request: Request, playbook_id: PlaybookId, principal: Viewer, session: SessionDep) -> Response:
    """Owner team and visibility (edit rights needed; non-admins only to one of their own teams)."""
    form = await request.form(max_fields=MAX_FIELDS)
    visibility = str(form.get("visibility", ""))
    if visibility not in PLAYBOOK_VISIBILITIES:
        raise Invalid(f"visibility: must be one of {', '.join(PLAYBOOK_VISIBILITIES)}")
    owner_team = str(form.get("owner_team", "")).strip() or None
    set_sharing(session=session, actor=actor_of(request, principal), principal=principal, playbook_id=playbook_id,
                owner_team=owner_team, visibility=visibility)  # fmt: skip
    session.commit()
    return RedirectResponse(f"/playbooks/{playbook_id}#sharing", status_code=status.HTTP_303_SEE_OTHER)


def sharing_context(session: Any, principal: Any, playbook_id: str) -> dict[str, Any]:
    """What the view's sharing section needs: the current owner team and visibility, and whether it may change."""
    return {
        "sharing": sharing_text(session, playbook_id),
        "can_share": may_edit(session, principal, playbook_id),
        "share_teams": team_choices(session, principal),
    }
