"""The playbook editor (issue 23): create a playbook or store a new version of one, in a form that works without
JavaScript — add, remove and reorder steps are buttons that post the whole form back (nothing typed is lost) — and
that htmx makes live: the chosen agent's params fields, the instructions' markdown preview, the `when` condition
checked as it is typed, and the DAG redrawn from the draft.

Saving validates the whole playbook (core/playbook.py's model and rules, then the agents' params schemas and risks
in services/playbooks.save_playbook, which stores the next version with its message and audits it); a refusal
answers 422 with the form as typed and each problem next to its field.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session

from api.auth import Principal, Viewer, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.agents import AgentSpec
from core.conditions import ConditionError, check
from core.errors import Conflict, Forbidden, Invalid
from core.playbook import Playbook, draft_playbook, new_playbook
from core.playbook_access import is_admin
from services.agents import all_agent_specs
from services.playbook_preview import PlaybookPreview, preview_playbook
from services.playbook_sharing import check_edit, exists, set_sharing
from services.playbooks import load_playbook, save_playbook
from web.pages import playbook_errors as pe
from web.pages import playbook_form as pf
from web.pages.playbook_common import markdown, may_create, sharing_text, svg, team_choices
from web.pages.playbook_graph import OUTCOME, GraphStep, draw, preview_graph
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
PlaybookId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]
# A 200-step playbook is about 5,000 fields (htmx sends the CSRF token as a header, so only this parse counts).
MAX_FIELDS = 20_000
SOURCES = (("builtin", "Built-in agents"), ("plugin", "Plugin agents"), ("webhook", "Webhook agents"))


def agent_groups(specs: dict[str, AgentSpec]) -> list[tuple[str, list[AgentSpec]]]:
    """The agent picker's groups: built-in, plugin and webhook agents, each sorted by name."""
    return [
        (label, sorted((s for s in specs.values() if s.source == source), key=lambda s: s.name))
        for source, label in SOURCES
        if any(s.source == source for s in specs.values())
    ]


def draft_graph(editor: pf.EditorForm) -> Any:
    """The draft's DAG (a cycle drawn with its closing edge turned round) and its dependency problems."""
    steps = [
        GraphStep(
            id=s.id, agent=s.agent, depends_on=tuple(s.depends_on), join=s.join, join_count=s.join_count or None,
            when=s.when.strip(), requires_approval=s.requires_approval, risk=s.risk or "low",
        )
        for s in editor.steps
    ]  # fmt: skip
    return draw(steps, label=f"Draft of playbook {editor.id or '(new)'}: {len(steps)} steps",
                href_of=lambda index, _step: f"#s{index}", id_prefix="draft")  # fmt: skip


def _action(editor: pf.EditorForm) -> str:
    return "/playbooks/_new" if editor.is_new else f"/playbooks/{editor.id}/edit"


def render_editor(
    request: Request,
    session: Session,
    editor: pf.EditorForm,
    specs: dict[str, AgentSpec],
    status_code: int = 200,
    draft_preview: PlaybookPreview | None = None,
) -> HTMLResponse:
    pe.settle_errors(editor)
    drawn = draft_graph(editor)
    principal = request.state.principal
    context = {
        "editor": editor,
        "teams": team_choices(session, principal) if editor.is_new else [],
        "may_leave_team": is_admin(principal),
        "sharing": None if editor.is_new else sharing_text(session, editor.id),
        "groups": agent_groups(specs),
        "graph_svg": svg(drawn),
        "graph_problems": drawn.problems,
        "action": _action(editor),
        "preview": markdown,
        "variable_types": pf.VARIABLE_TYPES,
        "joins": pf.JOINS,
        "on_failures": pf.ON_FAILURE,
        "retry_fields": pf.RETRY_FIELDS,
        "checkbox_steps": pf.CHECKBOX_STEPS,
        "draft_preview": draft_preview,
        "draft_preview_svg": svg(preview_graph(draft_preview)) if draft_preview else None,
        "outcome_text": OUTCOME,
        "markdown": markdown,
    }
    return templates.TemplateResponse(request, "playbooks/edit.html", context, status_code=status_code)


def _require_edit(session: Session, principal: Principal, playbook_id: str | None) -> None:
    """403 unless the caller may edit the playbook (404 when they may not see it), or create one (None)."""
    if playbook_id is not None and exists(session=session, playbook_id=playbook_id):
        check_edit(session=session, principal=principal, playbook_id=playbook_id)
    elif not may_create(session, principal):
        raise Forbidden(
            f"{principal.username} ({principal.role}) may not create playbooks: admins may, and responders for "
            "one of their teams"
        )


@router.get("/playbooks/_new", response_class=HTMLResponse)
def new_playbook_page(request: Request, principal: Viewer, session: SessionDep) -> Response:
    _require_edit(session, principal, None)
    specs = all_agent_specs(session)
    return render_editor(request, session, pf.blank(specs), specs)


@router.get("/playbooks/{playbook_id}/edit", response_class=HTMLResponse)
def edit_playbook_page(
    request: Request,
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    version: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> Response:
    """The form over the latest version (or `version`: a new version starts from an older one)."""
    _require_edit(session, principal, playbook_id)
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    specs = all_agent_specs(session)
    editor = pf.from_definition(playbook.model_dump(mode="json"), specs, is_new=False)
    return render_editor(request, session, editor, specs)


async def _submit(request: Request, principal: Principal, session: Session, playbook_id: str | None) -> Response:
    form = await request.form(max_fields=MAX_FIELDS)
    specs = all_agent_specs(session)
    editor = pf.from_form(form, specs)
    editor.is_new = playbook_id is None
    if playbook_id is not None:
        editor.id = playbook_id  # another id is a fork, not a version of this one
    action = form.get("action")
    if action == "preview":
        return _draft_preview(request, session, editor, specs)
    if isinstance(action, str) and action != "save":
        pf.apply_action(editor, action, specs)
        return render_editor(request, session, editor, specs)
    definition, errors = pf.to_definition(editor)
    editor.errors.update(errors)
    if editor.is_new and editor.id and exists(session=session, playbook_id=editor.id):
        editor.errors["id"] = f"id: playbook {editor.id} exists already; edit it, or choose another id"
    playbook = None
    if not editor.errors:
        try:
            playbook = new_playbook(definition)
        except ValidationError as err:
            pe.place_validation_errors(editor, err)
    stored = _save(request, session, principal, playbook, editor) if playbook and not editor.errors else None
    if stored is not None:
        where = f"/playbooks/{stored.id}?version={stored.version}&saved=1"
        return RedirectResponse(where, status_code=status.HTTP_303_SEE_OTHER)
    if not editor.errors and not editor.general:
        editor.general.append("the playbook could not be saved")
    return render_editor(request, session, editor, specs, status.HTTP_422_UNPROCESSABLE_CONTENT)


def _draft_preview(
    request: Request, session: Session, editor: pf.EditorForm, specs: dict[str, AgentSpec]
) -> HTMLResponse:
    """The form as it is, previewed for a sample incident and the variables' defaults, under the form; nothing is
    saved. Unknown `{{variables}}` are flagged per step rather than refused; other mistakes are placed as on save."""
    definition, errors = pf.to_definition(editor)
    editor.errors.update(errors)
    preview = None
    if not editor.errors:
        try:
            preview = preview_playbook(
                session=session, playbook=draft_playbook(definition), variables={}, incident_id=None
            )
        except ValidationError as err:
            pe.place_validation_errors(editor, err)
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT if editor.errors else status.HTTP_200_OK
    return render_editor(request, session, editor, specs, status_code, draft_preview=preview)


def _save(
    request: Request, session: Session, principal: Principal, playbook: Playbook, editor: pf.EditorForm
) -> Playbook | None:
    """The next version, with its message; a new playbook with its owner team and visibility. Committed; None when
    refused (the reasons placed on the form)."""
    actor = actor_of(request, principal)
    owner_team = (editor.owner_team or None) if editor.is_new else None
    try:
        stored = save_playbook(
            session=session,
            actor=actor,
            playbook=playbook,
            message=editor.message.strip() or None,
            principal=principal,
            owner_team=owner_team,
        )
        if editor.is_new and editor.visibility == "team":
            set_sharing(
                session=session,
                actor=actor,
                principal=principal,
                playbook_id=stored.id,
                owner_team=owner_team,
                visibility="team",
            )
    except (Invalid, Conflict) as err:  # PlaybookError is an Invalid, PlaybookConflict a Conflict
        session.rollback()
        for problem in pe.split_problems(str(err)):
            pe.place_problem(editor, problem)
        return None
    except Forbidden as err:
        if not str(err).startswith("owner_team:"):
            raise
        session.rollback()
        pe.place_problem(editor, str(err))
        return None  # fmt: skip
    session.commit()
    return stored


@router.post("/playbooks/_new", response_class=HTMLResponse)
async def create_playbook(request: Request, principal: Viewer, session: SessionDep) -> Response:
    _require_edit(session, principal, None)
    return await _submit(request, principal, session, None)


@router.post("/playbooks/{playbook_id}/edit", response_class=HTMLResponse)
async def save_version(request: Request, playbook_id: PlaybookId, principal: Viewer, session: SessionDep) -> Response:
    _require_edit(session, principal, playbook_id)
    return await _submit(request, principal, session, playbook_id)


# ---- what htmx asks while the form is edited (nothing is stored) ------------------------------------------------


def _step_index(form: Any) -> int:
    raw = form.get("step", "")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else 0


@router.post("/playbooks/_draft/graph", response_class=HTMLResponse)
async def draft_graph_partial(request: Request, session: SessionDep) -> HTMLResponse:
    """The draft's DAG as it is now (with a cycle's error), for the editor's graph panel."""
    editor = pf.from_form(await request.form(max_fields=MAX_FIELDS), all_agent_specs(session))
    drawn = draft_graph(editor)
    context = {"graph_svg": svg(drawn), "graph_problems": drawn.problems}
    return templates.TemplateResponse(request, "playbooks/_draft_graph.html", context)


@router.post("/playbooks/_draft/markdown", response_class=HTMLResponse)
async def markdown_preview(request: Request) -> HTMLResponse:
    """One step's instructions rendered as the view page shows them."""
    form = await request.form(max_fields=MAX_FIELDS)
    text = form.get(f"s{_step_index(form)}.instructions", "")
    html = markdown(text if isinstance(text, str) else "")
    return HTMLResponse(html or '<p class="muted">Nothing to preview.</p>')


@router.post("/playbooks/_draft/when", response_class=HTMLResponse)
async def check_when(request: Request) -> HTMLResponse:
    """Whether one step's `when` condition parses (core/conditions.py, as saving checks it)."""
    form = await request.form(max_fields=MAX_FIELDS)
    index = _step_index(form)
    raw = form.get(f"s{index}.when", "")
    expression = raw.strip() if isinstance(raw, str) else ""
    context: dict[str, Any] = {"index": index, "error": "", "ok": False}
    if expression:
        try:
            check(expression)
            context["ok"] = True
        except ConditionError as err:
            context["error"] = f"condition {err}"
    return templates.TemplateResponse(request, "playbooks/_when_check.html", context)


@router.post("/playbooks/_draft/params", response_class=HTMLResponse)
async def agent_fields(request: Request, session: SessionDep) -> HTMLResponse:
    """A step's risk and params fields for the agent just picked."""
    form = await request.form(max_fields=MAX_FIELDS)
    index = _step_index(form)
    specs = all_agent_specs(session)
    step = pf.step_from_form(form, index, specs)
    if step.spec is not None:
        step.risk = step.risk if step.risk in step.risks() else step.spec.default_risk
    context = {"step": step, "i": index, "errors": {}}
    return templates.TemplateResponse(request, "playbooks/_agent_fields.html", context)
