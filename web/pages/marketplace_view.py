"""What the marketplace pages show of an agent (web/pages/marketplace.py, marketplace_actions.py): the detail page's
context — services/marketplace.detail joined with who is looking (admins see hidden reviews and the buttons; a
user sees their own review even when hidden) — and the small formatters the templates use."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlmodel import Session

from api.auth import Principal
from core.markdown import render_markdown
from core.settings import Settings
from services import marketplace
from services.catalogue import load_catalogue
from web.templating import templates

SORT_LABELS = {"name": "Name", "rating": "Rating", "downloads": "Downloads", "newest": "Newest"}


def stars(rating: float | None) -> str:
    """A rating as text: ★★★★☆ for 4 (rounded to the nearest whole star); the number is written beside it."""
    if rating is None:
        return "☆☆☆☆☆"
    full = max(0, min(5, round(rating)))
    return "★" * full + "☆" * (5 - full)


def pretty(value: Any) -> str:
    """JSON for a <pre>: indented, keys in their own order (autoescaped by the template)."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def markdown(text: str) -> Markup:
    """A readme or changelog from an index, untrusted: core/markdown escapes raw HTML and sanitises the result."""
    return Markup(render_markdown(text or ""))  # noqa: S704 (sanitised by nh3 in render_markdown)


def web_link(url: str) -> str | None:
    """An index's homepage as a link only when it is http(s): never javascript: or data: from an index."""
    return url if urlsplit(url).scheme.lower() in ("http", "https") and urlsplit(url).netloc else None


def shown_source(source: str) -> str:
    """An index's source as the page shows it: a URL without its user, password or query (they may be credentials)."""
    parts = urlsplit(source)
    if parts.scheme.lower() not in ("http", "https"):
        return source
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a port number
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?…" if parts.query else "")


templates.env.filters.update(
    stars=stars, pretty_json=pretty, market_md=markdown, web_link=web_link, shown_source=shown_source
)


def _shown_reviews(
    reviews: list[dict[str, Any]], principal: Principal
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The reviews this reader sees (admins: all, marked; others: the visible ones and their own) and their own."""
    admin = principal.role == "admin"
    mine = next((r for r in reviews if r["username"] == principal.username), None)
    shown = [r for r in reviews if admin or not r["hidden"] or r is mine]
    return shown, mine


def detail_context(session: Session, catalogue: Any, name: str, principal: Principal) -> dict[str, Any]:
    """The detail page's context; NotFound when no index offers `name` and it is not installed."""
    found = marketplace.detail(session, catalogue, name, include_hidden=True)
    shown, mine = _shown_reviews(found["reviews"], principal)
    versions = found.get("versions", [])
    card = found.get("card")
    latest = next((v for v in versions if card and v["version"] == card["latest"]), None)
    installed = found["installed"]
    return {
        "a": found,
        "card": card,
        "latest": latest,
        "reviews": shown,
        "mine": mine,
        "is_admin": principal.role == "admin",
        # Versions an admin may install (or move an installed agent to): those that run here.
        "installable": [v["version"] for v in versions if not v["incompatible"]],
        "installed_version": installed["version"] if installed else None,
        "index_problems": [p for p in catalogue.problems if p.where and f"({name})" in p.where],
    }


async def render_detail(
    request: Request,
    session: Session,
    settings: Settings,
    name: str,
    principal: Principal,
    *,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """The detail page, with what an action left to say (`result`, `error`, the review form as typed)."""
    catalogue = await load_catalogue(settings)
    context = await asyncio.to_thread(detail_context, session, catalogue, name, principal)
    response = templates.TemplateResponse(
        request, "marketplace/detail.html", {**context, **extra}, status_code=status_code
    )
    if extra.get("result") is not None:
        response.headers["Cache-Control"] = "no-store"  # a webhook agent's secret is shown once, never cached
    return response
