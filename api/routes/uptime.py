"""Uptime from the rollups: one service's or all services' (a group's) availability and latency over a range, with
incident markers and an optional comparison with the previous period, as JSON (ETag / Last-Modified, 304 on a
matching If-None-Match) or as streamed CSV (services/uptime.py, services/uptime_csv.py)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from api.auth import require
from api.deps import EngineDep, SessionDep, SettingsDep
from core.services import SERVICE_NAME
from core.uptime import Period
from services import uptime
from services.uptime_csv import csv_lines

router = APIRouter(tags=["uptime"], dependencies=[require("viewer")])
ServiceName = Annotated[str, Path(pattern=SERVICE_NAME)]
RangeQuery = Annotated[str, Query(alias="range", max_length=10, description="1h | 24h | 7d | 30d | 90d | 1y")]
StepQuery = Annotated[str, Query(max_length=10, description="auto | 1m | 5m | 15m | 1h | 6h | 1d")]
EndQuery = Annotated[datetime | None, Query(description="ISO time with an offset; default now")]
CompareQuery = Annotated[Literal["previous"] | None, Query(description="previous: the period before, and the delta")]
Filter = Annotated[str | None, Query(max_length=100)]
GroupQuery = Annotated[str | None, Query(max_length=100, description="a tag or a team")]
ServicesQuery = Annotated[list[str] | None, Query(alias="service", max_length=200)]
PerServiceQuery = Annotated[
    bool, Query(description="false: only the summed points, the summary and the incidents, without `services`")
]


def _filters(incident_type: str | None, severity: str | None, agent: str | None) -> uptime.IncidentFilter:
    return uptime.IncidentFilter(incident_type=incident_type, severity=severity, agent=agent)


def _json(request: Request, body: dict[str, Any], modified: datetime | None) -> Response:
    """The answer with its ETag (a hash of the body) and Last-Modified; 304 when the client has it already."""
    content = json.dumps(body, separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if modified is not None:
        headers["Last-Modified"] = format_datetime(modified.astimezone(UTC).replace(microsecond=0), usegmt=True)
    sent = request.headers.get("if-none-match", "")
    if sent and (sent.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in sent.split(",")]):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


def _label(text: str) -> str:
    """A name as the CSV's comment line shows it: one line, no spaces."""
    return re.sub(r"[^A-Za-z0-9._:/,=-]", "_", text)[:200]


def _csv(lines: Any, filename: str) -> StreamingResponse:
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "private, no-cache"},
    )


CSV_ANSWER: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}, "description": "streamed CSV"}}


@router.get("/api/services/{name}/uptime")
def service_uptime(
    name: ServiceName, request: Request, session: SessionDep, settings: SettingsDep, range_: RangeQuery = "24h",
    step: StepQuery = "auto", end: EndQuery = None, compare: CompareQuery = None, incident_type: Filter = None,
    severity: Filter = None, agent: Filter = None,
) -> Response:  # fmt: skip
    """One service's availability and latency per step over the range, its incidents in it, and (compare=previous)
    the period before with the delta."""
    span = uptime.resolve_period(settings=settings, range_=range_, step=step, end=end)
    body, modified = uptime.service_uptime(
        session=session, name=name, span=span, compare=compare == "previous",
        filters=_filters(incident_type, severity, agent),
    )  # fmt: skip
    return _json(request, body, modified)


@router.get("/api/uptime")
def group_uptime(
    request: Request, session: SessionDep, settings: SettingsDep, range_: RangeQuery = "24h",
    step: StepQuery = "auto", end: EndQuery = None, compare: CompareQuery = None, group: GroupQuery = None,
    service: ServicesQuery = None, incident_type: Filter = None, severity: Filter = None, agent: Filter = None,
    per_service: PerServiceQuery = True,
) -> Response:  # fmt: skip
    """All services' (a group's, or those named) availability and latency per step, each service's summary and
    status (unless per_service=false), their incidents; compare=previous as for one service."""
    chosen = uptime.chosen_services(session, group=group, names=service or [])
    span = uptime.resolve_period(settings=settings, range_=range_, step=step, end=end, services=len(chosen))
    body, modified = uptime.group_uptime(
        session=session, span=span, group=group, chosen=chosen, compare=compare == "previous",
        filters=_filters(incident_type, severity, agent), per_service=per_service,
    )  # fmt: skip
    return _json(request, body, modified)


def _chosen(session: Session, group: str | None, names: list[str]) -> list[int]:
    return [r.id for r in uptime.chosen_services(session, group=group, names=names)]


@router.get("/api/services/{name}/uptime.csv", response_class=StreamingResponse, responses=CSV_ANSWER)
def service_uptime_csv(
    name: ServiceName, session: SessionDep, engine: EngineDep, settings: SettingsDep, range_: RangeQuery = "24h",
    step: StepQuery = "auto", end: EndQuery = None,
) -> StreamingResponse:  # fmt: skip
    """One service's uptime per step as CSV (streamed)."""
    span: Period = uptime.resolve_period(settings=settings, range_=range_, step=step, end=end)
    ids = _chosen(session, None, [name])
    lines = csv_lines(engine=engine, service_ids=ids, span=span, label=f"service={name}")
    return _csv(lines, _label(f"uptime-{name}-{span.range}.csv"))


@router.get("/api/uptime.csv", response_class=StreamingResponse, responses=CSV_ANSWER)
def group_uptime_csv(
    session: SessionDep, engine: EngineDep, settings: SettingsDep, range_: RangeQuery = "24h",
    step: StepQuery = "auto", end: EndQuery = None, group: GroupQuery = None, service: ServicesQuery = None,
) -> StreamingResponse:  # fmt: skip
    """Every chosen service's uptime per step as CSV, a row per service and point (streamed)."""
    ids = _chosen(session, group, service or [])
    span = uptime.resolve_period(settings=settings, range_=range_, step=step, end=end, services=len(ids))
    label = f"group={group}" if group else ("services=" + ",".join(service) if service else "services=all")
    label = _label(label)
    return _csv(csv_lines(engine=engine, service_ids=ids, span=span, label=label), f"uptime-{span.range}.csv")
