"""Controlling an incident's run from its page: retry a failed step with edited params, abort with a reason, and
edit, remove or add pending steps.

Every change goes through services/workflow_control.py, as the API's does (the same checks, the same audit rows).
Forms are generated from the agent's params schema (web/schema_form.py) and show params redacted, as the approval
form does. With htmx (HX-Request) a form opens in the workflow section, a done change answers the workflow partial
(HX-Retarget #workflow) and a refused one the form again with its reason (422 / 409); without JavaScript the same
URLs are pages: a done change redirects back to the incident (303), a refused one shows the form or the problem page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session
from temporalio.client import Client
from temporalio.service import RPCError

from api.auth import Responder, actor_of, require
from api.deps import Int64Id, SessionDep, SettingsDep, TemporalDep
from core.agents import RISK_RANK, RISKS
from core.errors import DomainError, Invalid
from core.payloads import WorkflowState
from services import workflow_control as control
from services.agents import all_agent_specs
from services.incidents.detail import detail_for, get_incident
from services.schemas import StepPublic
from web.schema_form import FormField, field_of, form_fields, form_values, parse_params
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("responder")])
BASE = "/incidents/{incident_id}/workflow"
STEP_FIELDS = ("id", "agent", "depends_on", "risk")


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _workflow_id(session: Session, incident_id: int) -> str:
    incident = get_incident(session=session, incident_id=incident_id)
    if not incident.workflow_id:
        raise control.ChangeRefused(f"incident {incident_id} has no playbook run to control")
    return incident.workflow_id


async def _state(temporal: Client, workflow_id: str) -> WorkflowState:
    """The run's live state, which the forms need (the steps' params): 503 when no worker answers."""
    try:
        return await control.live_state(temporal, workflow_id)
    except TimeoutError:
        raise control.TemporalUnavailable("no worker answered in time: the run's live state is needed") from None
    except RPCError as err:
        raise control.TemporalUnavailable(f"Temporal: {err.message}") from None


def _form_response(request: Request, form: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A control form: the fragment for htmx, else a page of its own."""
    name = "incidents/_control_form.html" if _htmx(request) else "incidents/control_page.html"
    return templates.TemplateResponse(request, name, {"form": form}, status_code=status_code)


def _workflow_partial(
    request: Request,
    session: Session,
    settings: Any,
    incident_id: int,
    state: WorkflowState | None,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """The workflow section after a change: the projection, with the run's live state over it (the projection is
    written just after the change, so it may not show it yet)."""
    incident = detail_for(session=session, incident=get_incident(session=session, incident_id=incident_id),
                          settings=settings)  # fmt: skip
    if state is not None and incident.workflow is not None:
        # Steps not started are listed by the pending list (pending_steps), as on every render of the section.
        steps = [StepPublic.model_validate(s, from_attributes=True) for s in state.steps if s.status != "pending"]
        workflow = incident.workflow.model_copy(
            update={"status": state.status, "error": state.error, "steps": steps, "current_steps": state.current_steps}
        )
        incident = incident.model_copy(update={"workflow": workflow})
    context = {"incident": incident, "can_act": True, **extra}
    response = templates.TemplateResponse(request, "incidents/_workflow.html", context, status_code=status_code)
    response.headers["HX-Retarget"] = "#workflow"
    response.headers["HX-Reswap"] = "innerHTML"
    return response


def _refused_partial(
    request: Request, session: Session, settings: Any, incident_id: int, err: DomainError
) -> HTMLResponse:
    """A refused button (remove, retry every failed step) under htmx: the section with the reason in it."""
    return _workflow_partial(request, session, settings, incident_id, None, status_code=err.status, problem=str(err))


async def _done(
    request: Request, session: Session, temporal: Client, settings: Any, incident_id: int, notice: str
) -> Response:
    if not _htmx(request):
        return RedirectResponse(f"/incidents/{incident_id}#workflow-title", status_code=status.HTTP_303_SEE_OTHER)
    try:
        state: WorkflowState | None = await control.live_state(temporal, _workflow_id(session, incident_id))
    except (TimeoutError, RPCError):
        state = None  # the live events refresh the section when the projection catches up
    return _workflow_partial(request, session, settings, incident_id, state, notice=notice)


def _refused(request: Request, form: dict[str, Any], err: DomainError) -> HTMLResponse:
    """The form again with why the change was not made: next to its field when it names one."""
    message = str(err)
    where = _field_for(message, form)
    if isinstance(err, Invalid) and where:
        form["errors"] = {**form.get("errors", {}), where: message}
        form["fields"] = _with_errors(form.get("fields", []), form["errors"])
    else:
        form["problem"] = message
    return _form_response(request, form, err.status)


def _field_for(message: str, form: dict[str, Any]) -> str | None:
    if form["kind"] == "abort":
        return "reason" if message.startswith("reason:") else None
    if form["kind"] == "add":
        head = message.removeprefix("step.").split(":", 1)[0].split(".", 1)[0] if message.startswith("step.") else ""
        if head in STEP_FIELDS:
            return head
        if "unknown agent" in message:
            return "agent"
        if "below agent" in message:
            return "risk"
    fields: list[FormField] = form.get("fields", [])
    return field_of(message, fields)


def _with_errors(fields: list[FormField], errors: dict[str, str]) -> list[FormField]:
    for item in fields:
        item.error = errors.get(item.name, "")
    return fields


def _step_form(
    kind: str, incident_id: int, state: WorkflowState, step_id: str, session: Session
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The form (what the page may show: params redacted), and the step's real params (never shown)."""
    step = control.find_step(state, step_id)
    wanted = "failed" if kind == "retry" else "pending"
    if step.status != wanted:
        raise control.ChangeRefused(f"step {step_id} is {step.status}, not {wanted}")
    agent = all_agent_specs(session).get(step.agent)
    schema = agent.params_schema if agent else {"type": "object"}
    form = {
        "kind": kind,
        "incident_id": incident_id,
        "step": {"step_id": step.step_id, "agent": step.agent, "status": step.status},
        "action": f"/incidents/{incident_id}/workflow/steps/{step_id}/{kind}",
        "fields": form_fields(schema, control.shown_params(step.params)),
        "errors": {},
    }
    return form, step.params


@router.get(BASE + "/pending", response_class=HTMLResponse)
async def pending_steps(request: Request, incident_id: Int64Id, session: SessionDep, temporal: TemporalDep) -> Response:
    """The run's steps that have not started, with their controls: only the live state knows them (the projection
    has a row for a step once it starts)."""
    context: dict[str, Any] = {"incident_id": incident_id, "steps": [], "problem": None}
    try:
        state = await _state(temporal, _workflow_id(session, incident_id))
        context["steps"] = [
            {"step_id": s.step_id, "agent": s.agent, "params": control.shown_params(s.params)}
            for s in state.steps
            if s.status == "pending"
        ]
        context["open"] = not state.finished_at and state.status not in ("completed", "cancelled")
    except DomainError as err:
        context["problem"] = str(err)
    name = "incidents/_pending_steps.html" if _htmx(request) else "incidents/pending_page.html"
    return templates.TemplateResponse(request, name, context)


@router.get(BASE + "/steps/{step_id}/{kind}", response_class=HTMLResponse)
async def step_form(
    request: Request, incident_id: Int64Id, step_id: str, kind: str, session: SessionDep, temporal: TemporalDep
) -> Response:
    """The retry form of a failed step, or the params form of a pending one, pre-filled (secrets redacted)."""
    if kind not in ("retry", "params"):
        raise control.WorkflowUnknown(f"no {kind} form")
    state = await _state(temporal, _workflow_id(session, incident_id))
    form, _ = _step_form(kind, incident_id, state, step_id, session)
    return _form_response(request, form)


@router.post(BASE + "/steps/{step_id}/{kind}", response_class=HTMLResponse)
async def submit_step_form(
    request: Request,
    incident_id: Int64Id,
    step_id: str,
    kind: str,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    """Retry the failed step with the form's params, or set the pending step's params."""
    if kind not in ("retry", "params", "remove"):
        raise control.WorkflowUnknown(f"no {kind} form")
    workflow_id = _workflow_id(session, incident_id)
    actor = actor_of(request, principal)
    if kind == "remove":
        try:
            await control.remove_step(
                session=session, temporal=temporal, workflow_id=workflow_id, step_id=step_id, actor=actor
            )
        except (control.ChangeRefused, Invalid) as err:
            if not _htmx(request):
                raise
            return _workflow_partial(
                request, session, settings, incident_id, None, status_code=err.status, problem=str(err)
            )
        return await _done(request, session, temporal, settings, incident_id, f"Step {step_id} removed.")
    form, original = _step_form(kind, incident_id, await _state(temporal, workflow_id), step_id, session)
    submitted = await request.form()
    params, errors = parse_params(submitted, form["fields"])
    form["fields"] = _with_errors(form_values(submitted, form["fields"]), errors)  # never the real values
    if errors:
        form["errors"] = errors
        return _form_response(request, form, 422)
    try:
        if kind == "retry":
            await control.retry_step(
                session=session, temporal=temporal, workflow_id=workflow_id, step_id=step_id,
                params=control.edited_params(original, params), actor=actor,
            )  # fmt: skip
            notice = f"Step {step_id} runs again."
        else:
            await control.edit_step_params(
                session=session, temporal=temporal, workflow_id=workflow_id, step_id=step_id, params=params,
                actor=actor,
            )  # fmt: skip
            notice = f"Step {step_id}'s params changed."
    except (control.ChangeRefused, Invalid) as err:
        return _refused(request, form, err)
    return await _done(request, session, temporal, settings, incident_id, notice)


@router.post(BASE + "/retry", response_class=HTMLResponse)
async def retry_failed(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    """Run every failed step again, as it was."""
    try:
        await control.retry_step(
            session=session, temporal=temporal, workflow_id=_workflow_id(session, incident_id), step_id=None,
            params=None, actor=actor_of(request, principal),
        )  # fmt: skip
    except control.ChangeRefused as err:
        if not _htmx(request):
            raise
        return _workflow_partial(
            request, session, settings, incident_id, None, status_code=err.status, problem=str(err)
        )
    return await _done(request, session, temporal, settings, incident_id, "The failed steps run again.")


@router.get(BASE + "/abort", response_class=HTMLResponse)
def abort_form(request: Request, incident_id: Int64Id, session: SessionDep) -> Response:
    _workflow_id(session, incident_id)
    return _form_response(request, _abort_form(incident_id, ""))


def _abort_form(incident_id: int, reason: str) -> dict[str, Any]:
    action = f"/incidents/{incident_id}/workflow/abort"
    return {"kind": "abort", "incident_id": incident_id, "action": action, "reason": reason, "errors": {}}


@router.post(BASE + "/abort", response_class=HTMLResponse)
async def submit_abort(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    reason = str((await request.form()).get("reason", ""))
    form = _abort_form(incident_id, reason)
    if len(reason) > 1000:
        form["errors"] = {"reason": "reason: at most 1000 characters"}
        return _form_response(request, form, 422)
    try:
        await control.abort(
            session=session, temporal=temporal, workflow_id=_workflow_id(session, incident_id), reason=reason,
            actor=actor_of(request, principal),
        )  # fmt: skip
    except (control.ChangeRefused, Invalid) as err:
        return _refused(request, form, err)
    return await _done(request, session, temporal, settings, incident_id, "The run was aborted.")


async def _add_form(session: Session, temporal: Client, incident_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """The add-step form: id, agent (the registry's), depends_on (the run's steps), risk, and the chosen agent's
    params."""
    agents = all_agent_specs(session)
    workflow_id = _workflow_id(session, incident_id)
    state = await _state(temporal, workflow_id)
    agent = agents.get(values.get("agent", ""))
    return {
        "kind": "add",
        "incident_id": incident_id,
        "action": f"/incidents/{incident_id}/workflow/add-step",
        "agents": sorted(agents),
        "agent": agent,
        "risks": [r for r in RISKS if agent is None or RISK_RANK[r] >= RISK_RANK[agent.default_risk]],
        "run_steps": [s.step_id for s in state.steps],
        "values": values,
        "fields": form_fields(agent.params_schema, {}) if agent else [],
        "errors": {},
    }


def _add_values(submitted: Any) -> dict[str, Any]:
    return {
        "id": str(submitted.get("id", "")).strip(),
        "agent": str(submitted.get("agent", "")),
        "depends_on": [str(d) for d in submitted.getlist("depends_on")] if hasattr(submitted, "getlist") else [],
        "risk": str(submitted.get("risk", "")),
    }


@router.get(BASE + "/add-step", response_class=HTMLResponse)
async def add_step_form(request: Request, incident_id: Int64Id, session: SessionDep, temporal: TemporalDep) -> Response:
    values = _add_values(request.query_params)
    return _form_response(request, await _add_form(session, temporal, incident_id, values))


@router.get(BASE + "/add-step/params", response_class=HTMLResponse)
async def add_step_params(
    request: Request, incident_id: Int64Id, session: SessionDep, temporal: TemporalDep
) -> HTMLResponse:
    """The chosen agent's risk and params fields (htmx loads them when an agent is picked)."""
    form = await _add_form(session, temporal, incident_id, _add_values(request.query_params))
    return templates.TemplateResponse(request, "incidents/_agent_fields.html", {"form": form})


@router.post(BASE + "/add-step", response_class=HTMLResponse)
async def submit_add_step(
    request: Request,
    incident_id: Int64Id,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    submitted = await request.form()
    values = _add_values(submitted)
    form = await _add_form(session, temporal, incident_id, values)
    if submitted.get("choose") or form["agent"] is None:  # without JavaScript: the agent's params come second
        if form["agent"] is None and not submitted.get("choose"):
            form["errors"] = {"agent": "agent: pick an agent"}
            return _form_response(request, form, 422)
        return _form_response(request, form)
    params, errors = parse_params(submitted, form["fields"])
    form["fields"] = _with_errors(form_values(submitted, form["fields"]), errors)
    if errors:
        form["errors"] = errors
        return _form_response(request, form, 422)
    step = {"id": values["id"], "agent": values["agent"], "depends_on": values["depends_on"], "params": params}
    if values["risk"]:
        step["risk"] = values["risk"]
    try:
        await control.add_step(
            session=session, temporal=temporal, workflow_id=_workflow_id(session, incident_id), step=step,
            actor=actor_of(request, principal),
        )  # fmt: skip
    except (control.ChangeRefused, Invalid) as err:
        return _refused(request, form, err)
    return await _done(request, session, temporal, settings, incident_id, f"Step {values['id']} added.")
