"""Dry runs of playbooks: start one (responder and above), read one, list a playbook's recent ones."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Responder, Viewer, actor_of, require
from api.deps import INT64_MAX, EngineDep, Int64Id, SettingsDep, TemporalDep
from services.dry_runs import DryRunSample, dry_run_public, get_dry_run, list_dry_runs, start_dry_run_once
from services.incidents.detail import in_session

router = APIRouter(tags=["dry runs"], dependencies=[require("viewer")])
PlaybookId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]


class DryRunCreate(BaseModel):
    """What to run: a version (the latest if left out), variable overrides, and the incident to pretend to handle —
    a past one (`incident_id`, read, never changed) or a `sample`."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=0, le=1_000_000)
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=100)
    incident_id: int | None = Field(default=None, ge=1, le=INT64_MAX)
    sample: DryRunSample | None = None


@router.post("/api/playbooks/{playbook_id}/dry-runs", status_code=status.HTTP_202_ACCEPTED)
async def create_dry_run(
    request: Request,
    response: Response,
    playbook_id: PlaybookId,
    principal: Responder,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
    body: DryRunCreate | None = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> dict[str, Any]:
    """Start a dry run: the playbook as a real workflow in simulation mode (`dry-run-<id>`). Nothing is changed:
    agents with side effects only say what they would do, approvals say who would be asked. 202 with its id and
    URL; follow it at `GET /api/dry-runs/{id}`. Safe to repeat with an `Idempotency-Key` (200: the first one)."""
    body = body or DryRunCreate()
    row, created = await start_dry_run_once(
        engine=engine,
        temporal=temporal,
        settings=settings,
        actor=actor_of(request, principal),
        playbook_id=playbook_id,
        version=body.version,
        variables=dict(body.variables),
        incident_id=body.incident_id,
        sample=body.sample,
        idempotency_key=idempotency_key,
        principal=principal,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/dry-runs/{row.id}"
    return dry_run_public(row)


@router.get("/api/dry-runs/{dry_run_id}")
async def read_dry_run(dry_run_id: Int64Id, principal: Viewer, engine: EngineDep) -> dict[str, Any]:
    """A dry run: its status, its run's state (steps as they went) and its report (per step what would happen)."""
    return await in_session(
        engine, lambda session: dry_run_public(get_dry_run(session=session, dry_run_id=dry_run_id, principal=principal))
    )


@router.get("/api/playbooks/{playbook_id}/dry-runs")
async def recent_dry_runs(playbook_id: PlaybookId, principal: Viewer, engine: EngineDep) -> list[dict[str, Any]]:
    """The playbook's recent dry runs, newest first (without their state)."""

    def read(session: Any) -> list[dict[str, Any]]:
        rows = list_dry_runs(session=session, playbook_id=playbook_id, principal=principal)
        return [{k: v for k, v in dry_run_public(row).items() if k != "state"} for row in rows]

    return await in_session(engine, read)
