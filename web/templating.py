"""The one Jinja2 environment of the site: autoescaping on, templates from files we ship only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from core.agent_palette import agent_style
from core.errors import DomainError
from core.tables import utcnow

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
templates = Jinja2Templates(directory=WEB_DIR / "templates")
templates.env.autoescape = True  # every template, whatever its extension

# A page's live stream first replays what happened from a little before the page was rendered, so a change
# committed between the render and the stream's start still refreshes the page (a replay only refreshes).
LIVE_REPLAY = timedelta(seconds=5)


def live_since() -> str:
    return (utcnow() - LIVE_REPLAY).isoformat()


templates.env.globals["live_since"] = live_since
templates.env.globals["agent_style"] = agent_style  # one colour + badge per agent on every page


def problem_page(request: Request, status_code: int, message: str, back: str) -> HTMLResponse:
    """What a form that could not be done answers: the reason, and a way back."""
    return templates.TemplateResponse(
        request, "problem.html", {"message": message, "back": back}, status_code=status_code
    )


def back_link(request: Request) -> str:
    """Where the problem page sends the user back to: the page they came from on this site, else the parent."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.url.netloc and referer.path.startswith("/"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    parent = request.url.path.rstrip("/").rsplit("/", 1)[0]
    return parent or "/"


async def domain_error_page(request: Request, exc: DomainError) -> HTMLResponse:
    """Every domain error a page or form raises (core/errors.py), as the problem page with its status."""
    response = problem_page(request, exc.status, str(exc), back_link(request))
    response.headers.update(exc.headers)
    return response
