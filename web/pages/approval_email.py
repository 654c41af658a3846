"""Single-use approval links from email. The link itself is the credential (256 random bits; we keep only its
hash): GET shows a confirmation page and decides nothing (mail scanners follow links); POST decides, once.
A link that was used, whose request another link decided, or whose approval is no longer pending or has expired,
answers 410; one we never issued (or altered) answers 401."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import update
from sqlmodel import Session, col, select

from api.auth import client_ip, public
from api.deps import SessionDep, TemporalDep
from core.approvals import Approval, ApprovalLink, link_hash
from core.audit import Actor
from core.identity import User
from core.tables import Incident, utcnow
from services.approvals import DecisionRefused, decide, describe, record_viewed
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[public("single-use email link")])
TOKEN = re.compile(r"^[A-Za-z0-9_-]{40,60}$")


def _page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    context = {"title": title, "message": message}
    return templates.TemplateResponse(request, "approvals/email_result.html", context, status_code=status_code)


def _lookup(session: Session, token: str) -> tuple[ApprovalLink, Approval, User] | str:
    """The link, its approval and its recipient; or why not, as "401" / "410"."""
    if not TOKEN.match(token):
        return "401"
    row = session.exec(
        select(ApprovalLink, Approval, User)
        .join(Approval, col(Approval.id) == ApprovalLink.approval_id)
        .join(User, col(User.id) == ApprovalLink.user_id)
        .where(ApprovalLink.token_hash == link_hash(token))
    ).first()
    if row is None:
        return "401"
    link, approval, user = row
    if link.used_at is not None or approval.status != "pending" or link.expires_at <= utcnow() or not user.is_active:
        return "410"
    return link, approval, user


def _refusal(request: Request, why: str) -> HTMLResponse:
    if why == "401":
        return _page(request, 401, "This link is not valid", "It was not sent by Agent Monitor, or it was altered.")
    gone = "It was used already, or the request was decided or has expired. Open the request on the site."
    return _page(request, 410, "This link no longer works", gone)


@router.get("/approvals/email/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str, session: SessionDep) -> HTMLResponse:
    found = _lookup(session, token)
    if isinstance(found, str):
        return _refusal(request, found)
    link, approval, user = found
    record_viewed(session, approval, user.username, "email")
    incident = session.get(Incident, approval.incident_id)
    context = {"approval": describe(approval), "decision": link.decision, "user": user, "incident": incident}
    return templates.TemplateResponse(request, "approvals/email_confirm.html", context)


@router.post("/approvals/email/{token}", response_class=HTMLResponse)
async def decide_by_link(
    request: Request,
    token: str,
    session: SessionDep,
    temporal: TemporalDep,
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    found = _lookup(session, token)
    if isinstance(found, str):
        return _refusal(request, found)
    link, approval, user = found
    claimed = session.exec(
        update(ApprovalLink)
        .where(col(ApprovalLink.id) == link.id, col(ApprovalLink.used_at).is_(None))
        .values(used_at=utcnow())
        .returning(col(ApprovalLink.id))
    ).first()
    session.commit()
    if claimed is None:  # the same link, posted twice at once: the other request has it
        return _refusal(request, "410")
    assert approval.id is not None
    try:
        actor = Actor(user.id, user.username, "email", client_ip(request), request.headers.get("user-agent"))
        decided = await decide(
            session, temporal, approval.id, decision=link.decision, actor=actor, role=user.role, channel="email",
            comment=comment,
        )  # fmt: skip
    except DecisionRefused as err:
        if err.status == 409:
            return _refusal(request, "410")
        return _page(request, err.status, "Not done", str(err))
    # Every other link of the request (the other decision, other recipients') is dead from now on, even before
    # the workflow's write of the decision reaches the approvals row.
    session.exec(
        update(ApprovalLink)
        .where(col(ApprovalLink.approval_id) == approval.id, col(ApprovalLink.used_at).is_(None))
        .values(used_at=utcnow())
    )
    session.commit()
    verb = "approved" if decided["status"] == "approved" else "rejected"
    return _page(request, 200, f"Request {verb}", f"{approval.step_id} on incident #{approval.incident_id} is {verb}.")
