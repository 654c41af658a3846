"""The live overview: active workflows, system figures and a feed of events, refreshed by SSE."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.auth import require
from api.deps import EngineDep, SettingsDep, TemporalDep
from services.overview import overview
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])
Part = Literal["workflows", "metrics", "feed", "approvals"]


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(
    request: Request, engine: EngineDep, temporal: TemporalDep, settings: SettingsDep
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "overview/index.html", await overview(engine=engine, temporal=temporal, settings=settings)
    )


@router.get("/overview/partials/{part}", response_class=HTMLResponse)
async def overview_partial(
    request: Request, part: Part, engine: EngineDep, temporal: TemporalDep, settings: SettingsDep
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, f"overview/_{part}.html", await overview(engine=engine, temporal=temporal, settings=settings)
    )
