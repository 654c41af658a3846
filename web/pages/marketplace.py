"""Agent marketplace pages (issue 24): browse the configured indexes' agents (search, capability and kind filters,
sort) with installed / update-available badges, one agent's page (readme rendered safely, versions, params, risk,
reviews; admins install, update and remove there: web/pages/marketplace_actions.py), and the agent templates.

The same services as the JSON API (api/routes/marketplace.py): services/marketplace.py and services/catalogue.py.
A bad index entry or an unreachable index is a notice on the page, never an error.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from api.auth import Viewer, require
from api.deps import SessionDep, SettingsDep
from core.agent_templates import templates as agent_templates
from core.agents import AGENT_NAME, Capability
from core.catalogue import Kind
from services import marketplace
from services.catalogue import load_catalogue
from web.pages import marketplace_actions
from web.pages.marketplace_view import SORT_LABELS, render_detail
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
AgentName = Annotated[str, Path(pattern=AGENT_NAME)]
Text = Annotated[str, Query(max_length=200)]
CAPABILITIES: tuple[str, ...] = get_args(Capability)
KINDS: tuple[str, ...] = get_args(Kind)


@router.get("/marketplace", response_class=HTMLResponse)
async def browse_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    q: Text = "",
    capability: Text = "",
    kind: Text = "",
    sort: Text = "name",
    installed: Text = "",
) -> HTMLResponse:
    """The agents of every configured index, filtered and sorted; what went wrong reading the indexes beside them.
    A filter value the form does not offer is ignored (the page, not a 422)."""
    wanted_capability = capability if capability in CAPABILITIES else ""
    wanted_kind = kind if kind in KINDS else ""
    wanted_sort = sort if sort in marketplace.SORTS else "name"
    installed_only = installed in ("1", "on", "true")
    catalogue = await load_catalogue(settings)
    cards = await asyncio.to_thread(
        lambda: marketplace.browse(
            session,
            catalogue,
            q=q.strip(),
            capability=wanted_capability or None,
            kind=wanted_kind or None,
            sort=wanted_sort,
            installed_only=installed_only,
        )
    )
    filters = {
        "q": q.strip(),
        "capability": wanted_capability,
        "kind": wanted_kind,
        "sort": wanted_sort,
        "installed": installed_only,
    }
    context: dict[str, Any] = {
        "cards": cards,
        "total": len(catalogue.listings),
        "filters": filters,
        "filtered": bool(filters["q"] or filters["capability"] or filters["kind"] or filters["installed"]),
        "capabilities": CAPABILITIES,
        "kinds": KINDS,
        "sorts": SORT_LABELS,
        "indexes": catalogue.indexes,
        "broken": [index for index in catalogue.indexes if index.error],
        "problems": [problem for problem in catalogue.problems if problem.where],
        "configured": bool(settings.agent_indexes),
        "fetched_at": catalogue.fetched_at,
    }
    return templates.TemplateResponse(request, "marketplace/list.html", context)


# "_templates" cannot be an agent's name (they start with a letter): /marketplace/{name} never meets it.
@router.get("/marketplace/_templates", response_class=HTMLResponse)
def templates_page(request: Request) -> HTMLResponse:
    """The agent templates `agent-monitor agents new` scaffolds, rendered for a sample agent."""
    return templates.TemplateResponse(request, "marketplace/templates.html", {"shown": agent_templates()})


@router.get("/marketplace/{name}", response_class=HTMLResponse)
async def agent_page(
    request: Request,
    name: AgentName,
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    notice: Annotated[str, Query(max_length=30)] = "",
) -> HTMLResponse:
    """One agent: readme, versions, params, risk, install counts and reviews; an admin's buttons."""
    said = marketplace_actions.NOTICES.get(notice)
    return await render_detail(request, session, settings, name, principal, notice=said)
