"""Acknowledging an incident from its escalation email (activities/escalation.py). As for approval links
(web/pages/approval_email.py), the link is the credential: 256 random bits of which we keep only the hash, issued
to one person, single-use, expiring. GET shows a confirmation page and changes nothing (mail scanners follow
links); POST acknowledges, as that person, through the service the API, the incident page and Slack use, so the
escalation stops the same way. No cookie is involved, so a cross-site form cannot act without the secret URL.

Answers: a link we never issued (or altered) 401; used or expired 410; its person deactivated or no longer a
responder (or above) 403; an incident already acknowledged, resolved or closed a 200 page saying so."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import update
from sqlmodel import Session, col, select

from api.auth import client_ip, public
from api.deps import EngineDep, SessionDep
from core.approvals import link_hash
from core.audit import Actor
from core.identity import User
from core.roles import ROLE_RANK
from core.tables import ENDED_STATUSES, AcknowledgeLink, Event, Incident, utcnow
from services.incidents.lifecycle import TransitionRefused, acknowledge
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[public("single-use email link to acknowledge")])
TOKEN = re.compile(r"^[A-Za-z0-9_-]{40,60}$")
GONE = "It was used already, or has expired. Open the incident on the site to acknowledge it."


@dataclass
class Found:
    link: AcknowledgeLink
    incident: Incident
    user: User


@dataclass
class Refused:
    status: int
    title: str
    message: str


def _lookup(session: Session, token: str) -> Found | Refused:
    """The link, its incident and its person, if the link still works and the person may acknowledge."""
    unknown = Refused(401, "This link is not valid", "It was not sent by Agent Monitor, or it was altered.")
    if not TOKEN.match(token):
        return unknown
    row = session.exec(
        select(AcknowledgeLink, Incident, User)
        .join(Incident, col(Incident.id) == AcknowledgeLink.incident_id)
        .join(User, col(User.id) == AcknowledgeLink.user_id)
        .where(AcknowledgeLink.token_hash == link_hash(token))
    ).first()
    if row is None:
        return unknown
    link, incident, user = row
    if link.used_at is not None or link.expires_at <= utcnow():
        return Refused(410, "This link no longer works", GONE)
    if not user.is_active:
        return Refused(403, "Not done", f"The account {user.username} is deactivated; nothing was done.")
    if ROLE_RANK[user.role] < ROLE_RANK["responder"]:
        why = f"{user.username} is a {user.role}: acknowledging takes a responder (or above); nothing was done."
        return Refused(403, "Not done", why)
    return Found(link, incident, user)


def _page(request: Request, status_code: int, title: str, message: str, incident_id: int | None) -> HTMLResponse:
    context = {"title": title, "message": message, "incident_id": incident_id}
    return templates.TemplateResponse(request, "incidents/email_result.html", context, status_code=status_code)


def _settled(request: Request, session: Session, incident: Incident) -> HTMLResponse | None:
    """A page saying there is nothing left to do, when the incident has ended or someone has it already."""
    if incident.status in ENDED_STATUSES:
        message = f"Incident #{incident.id} is {incident.status}: there is nothing to acknowledge."
        return _page(request, 200, f"Incident #{incident.id} is {incident.status}", message, incident.id)
    if incident.acknowledged_at is not None:
        by = session.exec(
            select(Event)
            .where(Event.incident_id == incident.id, Event.kind == "incident.acknowledged")
            .order_by(col(Event.id))
        ).first()
        who = f" by {by.data.get('actor')}" if by is not None else ""
        at = incident.acknowledged_at.strftime("%Y-%m-%d %H:%M UTC")
        message = f"Incident #{incident.id} was acknowledged{who} at {at}; its escalation has stopped."
        return _page(request, 200, "Already acknowledged", message, incident.id)
    return None


@router.get("/incidents/email/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str, session: SessionDep) -> HTMLResponse:
    found = _lookup(session, token)
    if isinstance(found, Refused):
        return _page(request, found.status, found.title, found.message, None)
    settled = _settled(request, session, found.incident)
    if settled is not None:
        return settled
    context = {"incident": found.incident, "user": found.user}
    return templates.TemplateResponse(request, "incidents/email_confirm.html", context)


@router.post("/incidents/email/{token}", response_class=HTMLResponse)
def acknowledge_by_link(request: Request, token: str, session: SessionDep, engine: EngineDep) -> HTMLResponse:
    found = _lookup(session, token)
    if isinstance(found, Refused):
        return _page(request, found.status, found.title, found.message, None)
    settled = _settled(request, session, found.incident)
    if settled is not None:  # the link stays unused: it says the same thing next time
        return settled
    link, incident, user = found.link, found.incident, found.user
    assert incident.id is not None
    # Read before the claim's commit expires them: the except below must not need the database.
    link_id, incident_id, title = link.id, incident.id, incident.title
    actor = Actor(user.id, user.username, "email", client_ip(request), request.headers.get("user-agent"))
    claimed = session.exec(
        update(AcknowledgeLink)
        .where(col(AcknowledgeLink.id) == link_id, col(AcknowledgeLink.used_at).is_(None))
        .values(used_at=utcnow())
        .returning(col(AcknowledgeLink.id))
    ).first()
    session.commit()
    if claimed is None:  # the same link, posted twice at once: the other request has it
        return _page(request, 410, "This link no longer works", GONE, None)
    try:
        acknowledged, first = acknowledge(engine=engine, incident_id=incident_id, actor=actor)
    except TransitionRefused:  # it was resolved a moment ago
        session.refresh(incident)
        return _settled(request, session, incident) or _page(request, 409, "Not done", "Try again.", incident_id)
    except Exception:
        # Nothing was acknowledged (the database or the service failed): the link may be tried again.
        session.rollback()
        session.exec(update(AcknowledgeLink).where(col(AcknowledgeLink.id) == link_id).values(used_at=None))
        session.commit()
        raise
    if not first:  # someone else acknowledged it between our check and our write
        return _settled(request, session, acknowledged) or _page(request, 200, "Already acknowledged", "", incident_id)
    message = f"You have incident #{incident_id} {title}; its escalation stops."
    return _page(request, 200, f"Incident #{incident_id} acknowledged", message, incident_id)
