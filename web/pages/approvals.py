"""Approval pages: the queue, and one request with its context, countdown, decision form and audit log.
The decision form posts like any HTML form (no JavaScript needed) through the same path as the API."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from api.auth import Viewer, actor_of, require
from api.deps import Int64Id, SessionDep, TemporalDep
from core.approval_rules import may_decide
from core.identity import team_names
from core.tables import Incident
from services.approvals import (
    DecisionRefused,
    approval_queue,
    audit_log,
    decide,
    describe,
    get_approval,
    record_viewed,
)
from web.templating import problem_page, templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
StatusFilter = Literal["pending", "approved", "rejected", "expired", "all"]


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(
    request: Request, session: SessionDep, status_: Annotated[StatusFilter, Query(alias="status")] = "pending"
) -> HTMLResponse:
    context = {"approvals": approval_queue(session=session, status_filter=status_), "status": status_}
    return templates.TemplateResponse(request, "approvals/list.html", context)


@router.get("/approvals/partials/rows", response_class=HTMLResponse)
def approvals_rows(
    request: Request, session: SessionDep, status_: Annotated[StatusFilter, Query(alias="status")] = "pending"
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "approvals/_rows.html", {"approvals": approval_queue(session=session, status_filter=status_)}
    )


def _context(session: Session, principal: Any, approval_id: int) -> dict[str, Any]:
    approval = get_approval(session, approval_id)
    incident = session.get(Incident, approval.incident_id)
    teams = team_names(session, principal.user_id)
    return {
        "approval": describe(approval),
        "incident": incident,
        "events": audit_log(session, approval_id),
        "params_json": json.dumps(approval.params, indent=2, sort_keys=True),
        "may_decide": approval.status == "pending"
        and may_decide(approval.approvers, actor=principal.username, role=principal.role, teams=teams),
    }


@router.get("/approvals/{approval_id}", response_class=HTMLResponse)
def approval_page(request: Request, approval_id: Int64Id, principal: Viewer, session: SessionDep) -> HTMLResponse:
    record_viewed(session, get_approval(session, approval_id), principal.username, "ui")
    return templates.TemplateResponse(request, "approvals/detail.html", _context(session, principal, approval_id))


@router.get("/approvals/{approval_id}/partials/decision", response_class=HTMLResponse)
def approval_partial(request: Request, approval_id: Int64Id, principal: Viewer, session: SessionDep) -> HTMLResponse:
    return templates.TemplateResponse(request, "approvals/_decision.html", _context(session, principal, approval_id))


@router.post("/approvals/{approval_id}/decision", response_class=HTMLResponse)
async def decide_from_page(
    request: Request,
    approval_id: Int64Id,
    principal: Viewer,
    session: SessionDep,
    temporal: TemporalDep,
    decision: Annotated[Literal["approve", "reject", "modify"], Form()],
    comment: Annotated[str, Form(max_length=2000)] = "",
    params: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    back = f"/approvals/{approval_id}"
    edited: dict[str, Any] | None = None
    if decision == "modify":
        try:
            edited = json.loads(params)
        except ValueError as err:
            return problem_page(request, 422, f"the edited params are not valid JSON: {err}", back)
        if not isinstance(edited, dict):
            return problem_page(request, 422, "the edited params must be a JSON object", back)
    try:
        await decide(
            session,
            temporal,
            approval_id,
            decision="reject" if decision == "reject" else "approve",
            params=edited,
            comment=comment,
            actor=actor_of(request, principal),
            role=principal.role,
            channel="ui",
        )
    except DecisionRefused as err:
        return problem_page(request, err.status, str(err), back)
    return RedirectResponse(back, status_code=status.HTTP_303_SEE_OTHER)
