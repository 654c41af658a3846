"""Trying a playbook out from its pages (issue 23): the preview (services/playbook_preview.py: every step's
instructions and params filled in for sample variables or a past incident, unknown variables and steps that would
not run flagged, the DAG drawn with each step's outcome), a dry run started from the same form (services/dry_runs.py;
its page is /dry-runs/{id}), and importing playbooks from a JSON or YAML file (services/playbook_io.py). Exports are
links to the API's GET /api/playbooks/…/export."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.auth import Viewer, actor_of, require
from api.deps import EngineDep, SessionDep, SettingsDep, TemporalDep
from core.errors import Forbidden, Invalid, NotFound
from core.playbook import Playbook
from core.playbook_vars import spec_of
from services.dry_runs import start_dry_run
from services.playbook_io import FORMATS, IMPORT_MAX_BYTES, Format, ImportProblems, import_playbooks
from services.playbook_preview import preview_playbook
from services.playbook_sharing import check_view
from services.playbooks import load_playbook
from web.pages.playbook_common import markdown, may_create, svg
from web.pages.playbook_editor import MAX_FIELDS, PlaybookId
from web.pages.playbook_graph import OUTCOME, preview_graph
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
VAR = "var."  # form fields var.<name>: a variable's value for this preview or dry run


def _inputs(form: Any, playbook: Playbook) -> tuple[dict[str, Any], int | None, dict[str, str]]:
    """The variables typed (only those that differ from empty) and the incident id; errors by field."""
    errors: dict[str, str] = {}
    variables = {
        key.removeprefix(VAR): value.strip()
        for key, value in form.items()
        if key.startswith(VAR) and isinstance(value, str) and value.strip()
    }
    raw = str(form.get("incident_id", "") or "").strip()
    incident_id = None
    if raw:
        if not raw.isdigit() or not 0 < int(raw) < 2**63:
            errors["incident_id"] = "incident_id: the number of a past incident"
        else:
            incident_id = int(raw)
    unknown = [name for name in variables if name not in playbook.variables and not name.startswith("incident.")]
    if unknown:
        errors["variables"] = f"variables: {', '.join(unknown)} not declared by the playbook"
    return variables, incident_id, errors


def _preview_response(
    request: Request, session: Any, settings: Any, principal: Any, playbook_id: str, version: int | None, form: Any
) -> HTMLResponse:
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    variables, incident_id, errors = _inputs(form, playbook)
    preview = None
    if not errors:
        try:
            preview = preview_playbook(session=session, playbook=playbook, variables=variables, incident_id=incident_id)
        except (Invalid, NotFound) as err:  # a value that does not fit its type; an incident that does not exist
            errors["incident_id" if isinstance(err, NotFound) else "variables"] = str(err)
    context = {
        "playbook": playbook,
        "declared": {name: spec_of(value) for name, value in playbook.variables.items()},
        "typed": variables,
        "incident_id": incident_id or "",
        "errors": errors,
        "preview": preview,
        "graph_svg": svg(preview_graph(preview)) if preview else None,
        "outcome_text": OUTCOME,
        "markdown": markdown,
        "can_dry_run": principal.can("responder"),
    }
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT if errors else status.HTTP_200_OK
    return templates.TemplateResponse(request, "playbooks/preview.html", context, status_code=status_code)


@router.get("/playbooks/{playbook_id}/preview", response_class=HTMLResponse)
def preview_page(
    request: Request,
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    version: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> HTMLResponse:
    """The preview form (variables, a past incident) and the playbook as it would run with the defaults."""
    return _preview_response(request, session, settings, principal, playbook_id, version, request.query_params)


@router.post("/playbooks/{playbook_id}/preview", response_class=HTMLResponse)
async def preview_with(
    request: Request, playbook_id: PlaybookId, principal: Viewer, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """The playbook as it would run with the form's variables or incident (the form also starts a dry run)."""
    form = await request.form(max_fields=MAX_FIELDS)
    raw_version = str(form.get("version", ""))
    version = int(raw_version) if raw_version.isdigit() else None
    return _preview_response(request, session, settings, principal, playbook_id, version, form)


@router.post("/playbooks/{playbook_id}/dry-run", response_class=HTMLResponse)
async def dry_run(
    request: Request,
    playbook_id: PlaybookId,
    principal: Viewer,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    """Start a dry run of this version with the form's variables and incident; then its page."""
    if not principal.can("responder"):
        raise Forbidden(f"a dry run needs the responder role; {principal.username} is {principal.role}")
    form = await request.form(max_fields=MAX_FIELDS)
    raw_version = str(form.get("version", ""))
    version = int(raw_version) if raw_version.isdigit() else None
    variables = {
        key.removeprefix(VAR): str(value).strip()
        for key, value in form.items()
        if key.startswith(VAR) and isinstance(value, str) and value.strip()
    }
    raw_incident = str(form.get("incident_id", "")).strip()
    if raw_incident and not raw_incident.isdigit():
        raise Invalid("incident_id: the number of a past incident")
    row = await start_dry_run(
        engine=engine, temporal=temporal, settings=settings, actor=actor_of(request, principal),
        playbook_id=playbook_id, version=version, variables=variables,
        incident_id=int(raw_incident) if raw_incident else None, principal=principal,
    )  # fmt: skip
    return RedirectResponse(f"/dry-runs/{row.id}", status_code=status.HTTP_303_SEE_OTHER)


# ---- import -------------------------------------------------------------------------------------------------------


def _import_page(request: Request, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    base: dict[str, Any] = {"formats": FORMATS, "fmt": "yaml", "text": "", "problems": [], "result": None}
    return templates.TemplateResponse(request, "playbooks/import.html", base | context, status_code=status_code)


@router.get("/playbooks/_import", response_class=HTMLResponse)
def import_page(request: Request, principal: Viewer, session: SessionDep) -> HTMLResponse:
    if not may_create(session, principal):
        raise Forbidden(f"{principal.username} ({principal.role}) may not create playbooks")
    return _import_page(request, {})


@router.post("/playbooks/_import", response_class=HTMLResponse)
async def import_submit(request: Request, principal: Viewer, session: SessionDep) -> HTMLResponse:
    """Import a file (or pasted text): everything is checked first; a 422 lists every problem with its path."""
    if principal.role == "viewer":
        raise Forbidden(f"importing playbooks needs the responder role; {principal.username} is a viewer")
    form = await request.form(max_fields=MAX_FIELDS)
    chosen = str(form.get("format", "yaml"))
    if chosen not in FORMATS:
        raise Invalid(f"format: one of {', '.join(FORMATS)}")
    fmt: Format = "json" if chosen == "json" else "yaml"
    upload = form.get("file")
    text = str(form.get("text", ""))
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read(IMPORT_MAX_BYTES + 1)
        if len(raw) > IMPORT_MAX_BYTES:
            raise Invalid(f"file: larger than {IMPORT_MAX_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("file: not UTF-8 text") from None
        if upload.filename.endswith(".json"):
            fmt = "json"
    actor = actor_of(request, principal)

    def run() -> Any:
        try:
            result = import_playbooks(session=session, actor=actor, text=text, fmt=fmt, principal=principal)
        except BaseException:
            session.rollback()  # nothing half-imported
            raise
        session.commit()
        return result

    try:
        result = await run_in_threadpool(run)
    except ImportProblems as err:
        context = {"fmt": fmt, "text": text, "problems": err.problems}
        return _import_page(request, context, status.HTTP_422_UNPROCESSABLE_CONTENT)
    return _import_page(request, {"fmt": fmt, "result": result})
