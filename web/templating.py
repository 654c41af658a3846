"""The one Jinja2 environment of the site: autoescaping on, templates from files we ship only."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
templates = Jinja2Templates(directory=WEB_DIR / "templates")
templates.env.autoescape = True  # every template, whatever its extension
