"""The agent marketplace (docs/agents.md, "Marketplace"): browse the configured indexes, install / update / remove
agents (admins; audited), and rate and review them (one review per user per agent)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session

from api.auth import Admin, Principal, Viewer, actor_of, require
from api.deps import EngineDep, SessionDep, SettingsDep
from core.agents import Capability
from core.catalogue import Kind
from core.errors import TooLarge
from core.marketplace import AgentReview, InstalledAgent
from core.settings import Settings
from services import agent_install, marketplace
from services.catalogue import load_catalogue

router = APIRouter(prefix="/api/marketplace", tags=["marketplace"], dependencies=[require("viewer")])


class InstallRequest(BaseModel):
    version: str | None = Field(default=None, max_length=50, description="default: the latest this product runs")


class ReviewRequest(BaseModel):
    rating: int = Field(ge=1, le=5)
    body: str = Field(default="", max_length=marketplace.REVIEW_MAX)


class HideRequest(BaseModel):
    hidden: bool = True
    reason: str = Field(default="", max_length=500)


def _installed(result: agent_install.Installed) -> dict[str, Any]:
    out = {
        "name": result.name,
        "kind": result.kind,
        "version": result.version,
        "previous_version": result.previous_version,
        "action": result.action,
        "spec": result.spec,
        "changelog": result.changelog,
        "changed": result.warnings,
        # Workers restart (one at a time) to load a Python agent; webhook agents need no restart.
        "workers_restart": result.kind == "python" and result.action != "unchanged",
    }
    if result.secret is not None:
        out["secret"] = result.secret  # the new webhook agent's signing secret: shown only now
    return out


@router.get("")
async def browse(
    session: SessionDep,
    settings: SettingsDep,
    q: str = Query(default="", max_length=200),
    capability: Capability | None = None,
    kind: Kind | None = None,
    sort: Literal["name", "rating", "downloads", "newest"] = "name",
    installed: bool = False,
    refresh: bool = False,
) -> dict[str, Any]:
    """The configured indexes' agents with what this installation knows (installed version, update available,
    ratings, installs), filtered and sorted; plus how reading each index went and the entries left out."""
    catalogue = await load_catalogue(settings, refresh=refresh)
    cards = await asyncio.to_thread(
        _in_session,
        session,
        marketplace.browse,
        catalogue,
        q=q,
        capability=capability,
        kind=kind,
        sort=sort,
        installed_only=installed,
    )
    return {
        "agents": [card.as_dict() for card in cards],
        "indexes": [index.__dict__ for index in catalogue.indexes],
        "problems": [problem.model_dump() for problem in catalogue.problems],
        "fetched_at": catalogue.fetched_at,
    }


def _in_session(session: Session, call: Any, *args: Any, **kwargs: Any) -> Any:
    return call(session, *args, **kwargs)


@router.get("/installed")
def list_installed(session: SessionDep) -> list[dict[str, Any]]:
    """Agents installed from the marketplace, at their pinned versions."""
    return [
        {
            "name": row.name,
            "kind": row.kind,
            "version": row.version,
            "index": row.index_name,
            "package": row.package_name,
            "wheels": row.wheels,
            "previous_version": row.previous_version,
            "installed_by": row.installed_by,
            "updated_at": row.updated_at,
        }
        for row in agent_install.installed(session).values()
    ]


@router.post("/wheels", status_code=status.HTTP_201_CREATED)
async def install_wheel(
    request: Request,
    principal: Admin,
    engine: EngineDep,
    settings: SettingsDep,
    filename: str = Query(max_length=255, pattern=r"^[A-Za-z0-9_.+-]+\.whl$"),
    sha256: str | None = Query(default=None, pattern=r"^[0-9a-fA-F]{64}$"),
) -> dict[str, Any]:
    """Install (or update to) the agent of a wheel given directly (the request body, application/octet-stream):
    checked against `sha256` when given, then installed with pip --require-hashes like an index's."""
    cap = settings.agent_package_max_bytes
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap:
            raise TooLarge(f"the wheel is larger than AGENT_PACKAGE_MAX_BYTES ({cap} bytes)")
    if not data:
        raise agent_install.InstallRefused("the request body must be the wheel file's bytes")
    result = await asyncio.to_thread(
        agent_install.install_wheel,
        engine,
        settings,
        actor=actor_of(request, principal),
        data=bytes(data),
        filename=filename,
        sha256=sha256,
    )
    return _installed(result)


@router.post("/reviews/{review_id}/hide")
def hide_review(
    request: Request, review_id: int, body: HideRequest, principal: Admin, session: SessionDep
) -> dict[str, Any]:
    """Hide a review (with the reason, audited) or show it again (`hidden: false`)."""
    row = marketplace.hide_review(
        session, actor=actor_of(request, principal), review_id=review_id, hidden=body.hidden, reason=body.reason
    )
    session.commit()
    return {"id": row.id, "agent": row.agent, "hidden": row.hidden, "reason": row.hidden_reason}


@router.get("/{name}")
async def show(name: str, principal: Viewer, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """One agent: its index entry (readme, versions with changelogs and compatibility, params, risk), what is
    installed, install counts per version, ratings and reviews (admins also see hidden ones)."""
    catalogue = await load_catalogue(settings)
    return await asyncio.to_thread(
        _in_session, session, marketplace.detail, catalogue, name, include_hidden=principal.role == "admin"
    )


@router.get("/{name}/update")
async def preview_update(
    name: str, session: SessionDep, settings: SettingsDep, version: str | None = Query(default=None, max_length=50)
) -> dict[str, Any]:
    """What updating to `version` (default: the latest this product runs) changes: the changelogs in between and
    the params schema and default risk before and after."""
    catalogue = await load_catalogue(settings)
    row = await asyncio.to_thread(session.get, InstalledAgent, name)
    return marketplace.update_preview(catalogue, row, name, version)


@router.post("/{name}/install", status_code=status.HTTP_201_CREATED)
async def install(
    request: Request,
    name: str,
    principal: Admin,
    engine: EngineDep,
    settings: SettingsDep,
    body: InstallRequest | None = None,
) -> dict[str, Any]:
    """Install `name` from the configured indexes (or move it to the version asked for). A failed install changes
    nothing: the previous version keeps working."""
    return await _install(request, name, principal, engine, settings, body, update=False)


@router.post("/{name}/update")
async def update(
    request: Request,
    name: str,
    principal: Admin,
    engine: EngineDep,
    settings: SettingsDep,
    body: InstallRequest | None = None,
) -> dict[str, Any]:
    """Update an installed agent to `version` (default: the latest this product runs)."""
    return await _install(request, name, principal, engine, settings, body, update=True)


async def _install(
    request: Request,
    name: str,
    principal: Principal,
    engine: Engine,
    settings: Settings,
    body: InstallRequest | None,
    *,
    update: bool,
) -> dict[str, Any]:
    version = body.version if body else None
    actor = actor_of(request, principal)
    result = await agent_install.install_from_index(
        engine, settings, actor=actor, name=name, version=version, update=update
    )
    return _installed(result)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove(request: Request, name: str, principal: Admin, engine: EngineDep) -> Response:
    """Uninstall an agent no playbook uses; workers restart without it."""
    await asyncio.to_thread(agent_install.remove, engine, actor=actor_of(request, principal), name=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/{name}/review")
async def review(
    request: Request, name: str, body: ReviewRequest, principal: Viewer, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Write or edit your review of an agent: a rating from 1 to 5 and some words (one per user per agent)."""
    catalogue = await load_catalogue(settings)
    actor = actor_of(request, principal)

    def save() -> AgentReview:
        row = marketplace.save_review(session, catalogue, actor=actor, agent=name, rating=body.rating, body=body.body)
        session.commit()
        session.refresh(row)
        return row

    row = await asyncio.to_thread(save)
    return {"id": row.id, "agent": row.agent, "rating": row.rating, "body": row.body, "hidden": row.hidden}


@router.delete("/{name}/review", status_code=status.HTTP_204_NO_CONTENT)
def delete_review(request: Request, name: str, principal: Viewer, session: SessionDep) -> Response:
    marketplace.delete_review(session, actor=actor_of(request, principal), agent=name)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
