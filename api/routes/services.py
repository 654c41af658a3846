"""Monitored services: register, list, change and remove them, and check one now (services/monitored.py: each
check's URL or host passes the SSRF guard; the dependencies, team and playbook named must exist)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from sqlmodel import col, select

from api.auth import Responder, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.errors import NotFound
from core.monitoring import ServiceState
from core.services import SERVICE_NAME, Service, ServiceBase, ServiceCreate
from services import monitored
from services.monitored import register_service, remove_service, request_check

router = APIRouter(prefix="/api/services", tags=["services"], dependencies=[require("viewer")])
ServiceName = Annotated[str, Path(pattern=SERVICE_NAME)]


def service_public(row: Service, state: ServiceState | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        **row.config,
        "created_by": row.created_by,
        "updated_at": row.updated_at.isoformat(),
        "state": state_public(state),
    }


def state_public(state: ServiceState | None) -> dict[str, Any]:
    """Where monitoring stands: status (unknown until the first check), the current streak, the open outage's
    incident, the last and next check."""
    if state is None:  # not checked yet
        state = ServiceState(status="unknown", next_check_at=None)  # type: ignore[arg-type,call-arg]

    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {
        "status": state.status,
        "consecutive_failures": state.consecutive_failures,
        "consecutive_passes": state.consecutive_passes,
        "failing_since": iso(state.failing_since),
        "incident_id": state.incident_id,
        "last_checked_at": iso(state.last_checked_at),
        "last_change_at": iso(state.last_change_at),
        "next_check_at": iso(state.next_check_at),
        "last_error": state.last_error,
    }


@router.get("")
def list_services(
    session: SessionDep,
    tag: Annotated[list[str] | None, Query(max_length=30)] = None,
    team: Annotated[str | None, Query(max_length=100)] = None,
) -> list[dict[str, Any]]:
    """Every service, by name; `tag` (all of them) and `team` narrow the list."""
    query = select(Service).order_by(col(Service.name))
    if team:
        query = query.where(col(Service.config)["team"].astext == team)
    if tag:
        query = query.where(col(Service.config)["tags"].contains(sorted(set(tag))))
    rows = session.exec(query).all()
    states = {
        st.service_id: st
        for st in session.exec(select(ServiceState).where(col(ServiceState.service_id).in_([r.id for r in rows])))
    }
    return [service_public(row, states.get(row.id or 0)) for row in rows]


@router.get("/{name}")
def get_service(name: ServiceName, session: SessionDep) -> dict[str, Any]:
    row = session.exec(select(Service).where(Service.name == name)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no service named {name!r}")
    return service_public(row, session.get(ServiceState, row.id))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_service(
    request: Request, body: ServiceCreate, principal: Responder, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Register a service to monitor."""
    row = register_service(session=session, settings=settings, data=body, actor=actor_of(request, principal))
    return service_public(row)


@router.put("/{name}")
def replace_service(
    request: Request, name: ServiceName, body: ServiceBase, principal: Responder, session: SessionDep,
    settings: SettingsDep,
) -> dict[str, Any]:  # fmt: skip
    """Change a service (the whole definition)."""
    try:
        row = monitored.replace_service(
            session=session, settings=settings, name=name, body=body, actor=actor_of(request, principal)
        )
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no service named {name!r} (POST registers one)") from None
    return service_public(row, session.get(ServiceState, row.id))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_service(request: Request, name: ServiceName, principal: Responder, session: SessionDep) -> None:
    remove_service(session=session, name=name, actor=actor_of(request, principal))


@router.post("/{name}/check", status_code=status.HTTP_202_ACCEPTED)
def check_service_now(request: Request, name: ServiceName, principal: Responder, session: SessionDep) -> dict[str, Any]:
    """Check the service now: the monitor runs its check at its next window (MONITOR_WINDOW_SECONDS) instead of at
    its next interval, and records it as any scheduled check (409 while the service is paused)."""
    asked = request_check(session=session, name=name, actor=actor_of(request, principal))
    return {"name": name, "requested_at": asked.isoformat()}
