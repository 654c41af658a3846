"""Monitored services: register, list, change and remove them (each check's URL or host passes the SSRF guard; the
dependencies, team and playbook named must exist)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.auth import Responder, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.audit import record_audit
from core.commands import CommandNotAllowed, allowed_rule
from core.identity import Team
from core.monitoring import ServiceState, spread
from core.outbound import BlockedTarget, OutboundPolicy, check_host, check_url
from core.services import SERVICE_NAME, HttpCheck, Service, ServiceBase, ServiceCreate, TcpCheck
from core.settings import Settings
from core.tables import utcnow
from services.playbooks import PlaybookNotFound, load_playbook

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


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


def _checked(session: Session, settings: Settings, name: str, body: ServiceBase) -> int | None:
    """What the models cannot check alone: the check's URL or host, the names of dependencies, team and playbook.
    Returns the team's id."""
    # The SSRF guard's write-time rules (literal addresses, localhost); it checks names again at connect time.
    policy = OutboundPolicy.from_settings(settings)
    if isinstance(body.check, HttpCheck):
        try:
            check_url(body.check.url, policy)
        except (BlockedTarget, ValueError) as err:
            raise _unprocessable(f"check.url: {err}") from None
    elif isinstance(body.check, TcpCheck):
        try:
            check_host(body.check.host, policy)
        except BlockedTarget as err:
            raise _unprocessable(f"check.host: {err}") from None
    if name in body.dependencies:
        raise _unprocessable("dependencies: a service cannot depend on itself")
    if body.dependencies:
        known = set(session.exec(select(Service.name).where(col(Service.name).in_(body.dependencies))))
        missing = [d for d in body.dependencies if d not in known]
        if missing:
            raise _unprocessable(f"dependencies: no service named {missing[0]!r} (register it first)")
    if body.default_playbook:
        try:
            load_playbook(session=session, settings=settings, playbook_id=body.default_playbook, version=None)
        except PlaybookNotFound as err:
            raise _unprocessable(f"default_playbook: {err}") from None
    _check_remediation(settings, body)
    if body.team is None:
        return None
    team = session.exec(select(Team).where(Team.name == body.team)).first()
    if team is None:
        raise _unprocessable(f"team: no team named {body.team!r}")
    return team.id


def _check_remediation(settings: Settings, body: ServiceBase) -> None:
    """A declared remediation must be able to run: its command allowed by COMMAND_ALLOWLIST as it stands, its
    webhook past the SSRF guard's write-time rules."""
    remediation = body.remediation
    if remediation is None:
        return
    if remediation.command is not None:
        if not settings.command_allowlist:
            raise _unprocessable("remediation.command: COMMAND_ALLOWLIST is empty, so remediate_command runs nothing")
        try:
            allowed_rule(settings.command_allowlist, remediation.command, None, None)
        except CommandNotAllowed as err:
            raise _unprocessable(f"remediation.command: {err}") from None
    if remediation.webhook is not None:
        try:
            check_url(remediation.webhook, OutboundPolicy.from_settings(settings))
        except (BlockedTarget, ValueError) as err:
            raise _unprocessable(f"remediation.webhook: {err}") from None


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
    settings_of = ServiceBase.model_validate(body.model_dump(exclude={"name"}))
    team_id = _checked(session, settings, body.name, settings_of)
    config = settings_of.model_dump(mode="json")
    row = Service(name=body.name, config=config, team_id=team_id, enabled=body.enabled, created_by=principal.username)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"a service named {body.name!r} exists (PUT changes it)"
        ) from None
    record_audit(
        session, actor=actor_of(request, principal), action="service.create", target_type="service",
        target_id=body.name, after=config,
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    return service_public(row)


@router.put("/{name}")
def replace_service(
    request: Request, name: ServiceName, body: ServiceBase, principal: Responder, session: SessionDep,
    settings: SettingsDep,
) -> dict[str, Any]:  # fmt: skip
    """Change a service (the whole definition)."""
    row = session.exec(select(Service).where(Service.name == name).with_for_update()).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no service named {name!r} (POST registers one)")
    team_id = _checked(session, settings, name, body)
    if body.interval_seconds != row.config.get("interval_seconds"):
        # The next check is due no later than one new interval from now (spread as first checks are).
        state = session.get(ServiceState, row.id, with_for_update=True)
        if state is not None:
            assert row.id is not None
            soonest = utcnow() + timedelta(seconds=spread(row.id, body.interval_seconds))
            state.next_check_at = min(state.next_check_at, soonest)
    before, row.config = row.config, body.model_dump(mode="json")
    row.team_id, row.enabled, row.updated_at = team_id, body.enabled, utcnow()
    record_audit(
        session, actor=actor_of(request, principal), action="service.update", target_type="service",
        target_id=name, before=before, after=row.config,
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    return service_public(row, session.get(ServiceState, row.id))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_service(request: Request, name: ServiceName, principal: Responder, session: SessionDep) -> None:
    row = session.exec(select(Service).where(Service.name == name)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no service named {name!r}")
    dependents = [other.name for other in session.exec(select(Service)) if name in other.config.get("dependencies", [])]
    if dependents:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{', '.join(sorted(dependents))} depend on {name}")
    session.delete(row)
    record_audit(
        session, actor=actor_of(request, principal), action="service.delete", target_type="service", target_id=name
    )
    session.commit()
