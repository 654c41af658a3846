"""What the marketplace pages change (issue 24), through the same services as the API, with the same rules:
installing, updating and removing agents and hiding reviews are for admins (audited by the services); any signed-in
user writes, edits and deletes their own review.

Forms work without JavaScript. An install, update or removal answers the agent's page itself with what happened
(a new webhook agent's signing secret is shown there once: it is never put in a URL); a refused one answers the
page with the service's reason and its status (422, 409, 502 …), never a 500. Reviews post, then redirect.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from api.auth import Admin, Principal, Viewer, actor_of, require
from api.deps import EngineDep, Int32Id, SessionDep, SettingsDep
from core.agents import AGENT_NAME
from core.errors import DomainError, Invalid, NotFound
from core.marketplace import AgentReview, InstalledAgent
from core.settings import Settings
from services import agent_install, marketplace
from services.catalogue import load_catalogue
from web.pages.marketplace_view import render_detail
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
AgentName = Annotated[str, Path(pattern=AGENT_NAME)]
Version = Annotated[str, Query(max_length=50)]
NOTICES = {
    "review-saved": "Your review is saved.",
    "review-deleted": "Your review is deleted.",
    "review-hidden": "The review is hidden: only admins and its author see it.",
    "review-shown": "The review is shown again.",
}


async def _form(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


def _result(found: agent_install.Installed) -> dict[str, Any]:
    """What the page says about an install or update."""
    return {
        "action": found.action,
        "name": found.name,
        "kind": found.kind,
        "version": found.version,
        "previous_version": found.previous_version,
        "changed": found.warnings,
        "secret": found.secret,
        # Workers restart one at a time to load a Python agent; a webhook agent needs no restart.
        "workers_restart": found.kind == "python" and found.action != "unchanged",
    }


async def _refused(
    request: Request, session: Session, settings: Settings, name: str, principal: Principal, err: DomainError, **kw: Any
) -> HTMLResponse:
    """The agent's page saying why the service refused (with its status: never a 500 for a refusal)."""
    return await render_detail(
        request, session, settings, name, principal, status_code=err.status, error=str(err), **kw
    )


@router.get("/marketplace/{name}/update", response_class=HTMLResponse, dependencies=[require("admin")])
async def update_preview_page(
    request: Request, name: AgentName, session: SessionDep, settings: SettingsDep, version: Version = ""
) -> HTMLResponse:
    """What updating an installed agent changes (changelogs in between, params schema and risk before → after),
    with the button that does it."""
    catalogue = await load_catalogue(settings)
    row = await asyncio.to_thread(session.get, InstalledAgent, name)
    if row is None:
        raise NotFound(f"{name!r} is not installed from the marketplace: install it first")
    preview = marketplace.update_preview(catalogue, row, name, version or None)
    return templates.TemplateResponse(request, "marketplace/update.html", {"p": preview, "installed": row})


@router.post("/marketplace/{name}/install", response_class=HTMLResponse)
async def install_agent(
    request: Request, name: AgentName, principal: Admin, session: SessionDep, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    """Install `name` from the indexes (the version chosen, else the latest that runs here)."""
    version = (await _form(request)).get("version", "").strip()[:50] or None
    try:
        found = await agent_install.install_from_index(
            engine, settings, actor=actor_of(request, principal), name=name, version=version
        )
    except DomainError as err:
        return await _refused(request, session, settings, name, principal, err)
    return await render_detail(request, session, settings, name, principal, result=_result(found))


@router.post("/marketplace/{name}/update", response_class=HTMLResponse)
async def update_agent(
    request: Request, name: AgentName, principal: Admin, session: SessionDep, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    """Update an installed agent to the version the preview showed."""
    version = (await _form(request)).get("version", "").strip()[:50] or None
    try:
        if await asyncio.to_thread(session.get, InstalledAgent, name) is None:
            raise NotFound(f"{name!r} is not installed from the marketplace: install it first")
        found = await agent_install.install_from_index(
            engine, settings, actor=actor_of(request, principal), name=name, version=version
        )
    except DomainError as err:
        return await _refused(request, session, settings, name, principal, err)
    session.expire_all()  # the page reads the row the install committed in its own session
    return await render_detail(request, session, settings, name, principal, result=_result(found))


@router.post("/marketplace/{name}/remove", response_class=HTMLResponse)
async def remove_agent(
    request: Request, name: AgentName, principal: Admin, session: SessionDep, engine: EngineDep, settings: SettingsDep
) -> HTMLResponse:
    """Uninstall an agent no playbook uses."""
    try:
        row = await asyncio.to_thread(agent_install.remove, engine, actor=actor_of(request, principal), name=name)
    except DomainError as err:
        return await _refused(request, session, settings, name, principal, err)
    session.expire_all()
    removed = {"action": "remove", "name": name, "kind": row.kind, "version": row.version}
    return await render_detail(request, session, settings, name, principal, result=removed)


def _back(name: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"/marketplace/{name}?notice={notice}#reviews", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/marketplace/{name}/review", response_class=HTMLResponse)
async def save_review(
    request: Request, name: AgentName, principal: Viewer, session: SessionDep, settings: SettingsDep
) -> Response:
    """Write or edit the caller's review: a rating from 1 to 5 and some words."""
    form = await _form(request)
    typed = {"rating": form.get("rating", ""), "body": form.get("body", "")}
    catalogue = await load_catalogue(settings)
    actor = actor_of(request, principal)

    def save() -> None:
        try:
            rating = int(typed["rating"])
        except ValueError:
            raise Invalid("rating: choose from 1 to 5 stars") from None
        marketplace.save_review(session, catalogue, actor=actor, agent=name, rating=rating, body=typed["body"])
        session.commit()

    try:
        await asyncio.to_thread(save)
    except DomainError as err:
        await asyncio.to_thread(session.rollback)
        return await _refused(request, session, settings, name, principal, err, typed=typed)
    return _back(name, "review-saved")


@router.post("/marketplace/{name}/review/delete", response_class=HTMLResponse)
async def delete_review(request: Request, name: AgentName, principal: Viewer, session: SessionDep) -> Response:
    """Delete the caller's review of `name`."""

    def delete() -> None:
        marketplace.delete_review(session, actor=actor_of(request, principal), agent=name)
        session.commit()

    await asyncio.to_thread(delete)
    return _back(name, "review-deleted")


@router.post("/marketplace/reviews/{review_id}/hide", response_class=HTMLResponse)
async def hide_review(
    request: Request, review_id: Int32Id, principal: Admin, session: SessionDep, settings: SettingsDep
) -> Response:
    """Hide a review (with the reason, audited) or show it again (`hidden=0`)."""
    form = await _form(request)
    hidden = form.get("hidden", "1") != "0"
    row = await asyncio.to_thread(session.get, AgentReview, review_id)
    if row is None:
        raise NotFound(f"no review {review_id}")
    agent = row.agent

    def hide() -> None:
        marketplace.hide_review(
            session,
            actor=actor_of(request, principal),
            review_id=review_id,
            hidden=hidden,
            reason=form.get("reason", "")[:500],
        )
        session.commit()

    try:
        await asyncio.to_thread(hide)
    except DomainError as err:
        await asyncio.to_thread(session.rollback)
        return await _refused(request, session, settings, agent, principal, err, hiding=review_id)
    return _back(agent, "review-hidden" if hidden else "review-shown")
