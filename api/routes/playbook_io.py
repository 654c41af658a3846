"""Playbook preview, export and import (services/playbook_preview.py, services/playbook_io.py).

Mounted before api/routes/playbooks.py: `/api/playbooks/export`, `/preview` and `/import` are not playbook ids.
An import's 422 lists every problem: `errors` holds one {field, message} per problem, `field` being its path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import Responder, Viewer, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.errors import INT64_MAX, Invalid
from core.playbook import Playbook, draft_playbook
from services.playbook_io import (
    Format,
    ImportProblems,
    ImportResult,
    export_playbooks,
    import_playbooks,
    nesting_problem,
    problems_of,
)
from services.playbook_preview import PlaybookPreview, preview_playbook
from services.playbook_sharing import check_view
from services.playbooks import load_playbook, visible_playbooks

router = APIRouter(prefix="/api/playbooks", tags=["playbooks"], dependencies=[require("viewer")])
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
PlaybookId = Annotated[str, Path(pattern=ID_PATTERN)]
FormatQuery = Annotated[Literal["json", "yaml"], Query(alias="format", description="json (default) or yaml")]
VersionQuery = Annotated[int | None, Query(ge=0, le=1_000_000, description="the latest when left out")]
MEDIA: dict[str, Format] = {
    "application/json": "json",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
}
CONTENT_TYPE = {"json": "application/json", "yaml": "application/yaml"}
TEXT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}, "application/yaml": {"schema": {}}}}
}
IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "a playbook or {playbooks: [...]}"}},
            "application/yaml": {"schema": {"type": "string", "description": "the same, as YAML"}},
        },
    }
}
VariableValue = StrictStr | StrictBool | StrictInt | StrictFloat | None


class PreviewOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # region=eu-2 (or vars.region); incident.severity=P1 and the like change the incident's fields
    variables: dict[Annotated[str, Field(max_length=120)], VariableValue] = Field(default_factory=dict, max_length=100)
    incident_id: int | None = Field(default=None, ge=1, le=INT64_MAX)  # a past incident as the context


class DraftPreview(PreviewOptions):
    playbook: dict[str, Any]  # a definition, as the editor holds it (need not be saved)


def problems_response(problems: list[str]) -> JSONResponse:
    """422 with every problem: `errors` [{field: its path, message}]."""
    errors = []
    for problem in problems:
        field, _, message = problem.partition(": ")
        errors.append({"field": field, "message": message} if message else {"field": "body", "message": problem})
    detail = str(ImportProblems(problems))
    return JSONResponse({"detail": detail, "errors": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


@router.post("/preview", response_model=PlaybookPreview)
def preview_draft(session: SessionDep, body: DraftPreview) -> Any:
    """Preview a definition that need not be stored: each step's instructions, params and impact filled in, the
    placeholders nobody fills, the steps that would not run and why, and the DAG (nodes, edges)."""
    if problem := nesting_problem(body.playbook):
        raise Invalid(f"playbook: {problem}")
    try:
        playbook = draft_playbook(body.playbook)
    except ValidationError as err:
        return problems_response(["playbook." + p for p in problems_of(err, body.playbook)])
    return preview_playbook(session=session, playbook=playbook, variables=body.variables, incident_id=body.incident_id)


@router.post("/{playbook_id}/preview", response_model=PlaybookPreview)
def preview_stored(
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    version: VersionQuery = None,
    body: Annotated[PreviewOptions | None, Body()] = None,
) -> PlaybookPreview:
    """Preview a stored playbook (the latest version, or `version`)."""
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    options = body or PreviewOptions()
    return preview_playbook(
        session=session, playbook=playbook, variables=options.variables, incident_id=options.incident_id
    )


@router.get("/export", response_class=Response, responses=TEXT_RESPONSES)
def export_bundle(
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    fmt: FormatQuery = "json",
    ids: Annotated[
        list[Annotated[str, Field(pattern=ID_PATTERN)]] | None,
        Query(alias="id", max_length=200, description="playbooks to export (latest versions); all you see if none"),
    ] = None,
) -> Response:
    """A bundle ({"playbooks": [...]}) of the latest version of each playbook named, or of every one you see."""
    if ids:
        playbooks = []
        for playbook_id in dict.fromkeys(ids):
            check_view(session=session, principal=principal, playbook_id=playbook_id)
            playbooks.append(load_playbook(session=session, settings=settings, playbook_id=playbook_id))
    else:
        rows = visible_playbooks(session=session, principal=principal)
        playbooks = [Playbook.model_validate(row.definition) for row in rows]
    return _file(export_playbooks(playbooks, fmt, bundle=True), fmt, "playbooks")


@router.get("/{playbook_id}/export", response_class=Response, responses=TEXT_RESPONSES)
def export_one(
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    fmt: FormatQuery = "json",
    version: VersionQuery = None,
) -> Response:
    """One playbook version as a file, exactly as stored: importing it elsewhere stores the same definition."""
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    return _file(export_playbooks([playbook], fmt, bundle=False), fmt, f"{playbook.id}-v{playbook.version}")


def _file(text: str, fmt: Format, name: str) -> Response:
    return Response(
        content=text.encode(),
        media_type=CONTENT_TYPE[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


@router.post("/import", response_model=ImportResult, openapi_extra=IMPORT_BODY)
async def import_file(request: Request, principal: Responder, session: SessionDep) -> Any:
    """Import one playbook or a bundle (JSON or YAML by Content-Type). Everything is checked first: a 422 lists every
    problem with its path and nothing is saved. A playbook whose id and version are stored with the same definition
    is skipped; any other becomes its id's next version (your edit rights apply)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = MEDIA.get(media)
    if fmt is None:
        return JSONResponse(
            {"detail": f"Content-Type must be application/json or application/yaml, not {media or 'missing'}"},
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("body: not UTF-8 text") from None
    actor = actor_of(request, principal)

    def run() -> ImportResult:
        try:
            result = import_playbooks(session=session, actor=actor, text=text, fmt=fmt, principal=principal)
        except BaseException:
            session.rollback()  # nothing half-imported
            raise
        session.commit()
        return result

    try:
        return await run_in_threadpool(run)
    except ImportProblems as err:
        return problems_response(err.problems)
