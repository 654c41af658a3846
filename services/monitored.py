"""Monitored services as a use case shared by the API (api/routes/services.py) and the pages (web/pages/services.py):
register, change, pause, resume and remove a service, and ask for a check now — with the checks a model cannot make
alone (the check's URL or host past the SSRF guard; dependencies, team and playbook that exist; a remediation that
can run), one audit row per change and a `service.changed` event so open pages refresh.

Errors are the domain's (core/errors.py): Invalid ("field: why", 422), NotFound, Conflict.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.commands import CommandNotAllowed, allowed_rule
from core.errors import Conflict, Invalid, NotFound
from core.events import publish
from core.identity import Team
from core.monitoring import ServiceState, spread
from core.outbound import BlockedTarget, OutboundPolicy, check_host, check_url
from core.services import HttpCheck, Service, ServiceBase, ServiceCreate, TcpCheck
from core.settings import Settings
from core.tables import Event, utcnow
from services.playbooks import PlaybookNotFound, load_playbook

# "Check now" brings the service's next check forward to now: the monitor's next window (MONITOR_WINDOW_SECONDS)
# runs it through its own path — result stored, state moved on, outage rules applied — as any scheduled check.
CHECK_NOW = text("""
INSERT INTO service_states (service_id, status, consecutive_failures, consecutive_passes, episode, next_check_at)
VALUES (:service_id, 'unknown', 0, 0, 0, :now)
ON CONFLICT (service_id) DO UPDATE SET next_check_at = least(service_states.next_check_at, EXCLUDED.next_check_at)
""")


def find_service(*, session: Session, name: str, for_update: bool = False) -> Service:
    """The service of that name (NotFound otherwise)."""
    query = select(Service).where(Service.name == name)
    row = session.exec(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"no service named {name!r}")
    return row


def validate_references(*, session: Session, settings: Settings, name: str, body: ServiceBase) -> int | None:
    """What the models cannot check alone: the check's URL or host, the names of dependencies, team and playbook,
    the remediation. Returns the team's id."""
    # The SSRF guard's write-time rules (literal addresses, localhost); it checks names again at connect time.
    policy = OutboundPolicy.from_settings(settings)
    if isinstance(body.check, HttpCheck):
        try:
            check_url(body.check.url, policy)
        except (BlockedTarget, ValueError) as err:
            raise Invalid(f"check.url: {err}") from None
    elif isinstance(body.check, TcpCheck):
        try:
            check_host(body.check.host, policy)
        except BlockedTarget as err:
            raise Invalid(f"check.host: {err}") from None
    if name in body.dependencies:
        raise Invalid("dependencies: a service cannot depend on itself")
    if body.dependencies:
        known = set(session.exec(select(Service.name).where(col(Service.name).in_(body.dependencies))))
        missing = [d for d in body.dependencies if d not in known]
        if missing:
            raise Invalid(f"dependencies: no service named {missing[0]!r} (register it first)")
    if body.default_playbook:
        try:
            load_playbook(session=session, settings=settings, playbook_id=body.default_playbook, version=None)
        except PlaybookNotFound as err:
            raise Invalid(f"default_playbook: {err}") from None
    _check_remediation(settings, body)
    if body.team is None:
        return None
    team = session.exec(select(Team).where(Team.name == body.team)).first()
    if team is None:
        raise Invalid(f"team: no team named {body.team!r}")
    return team.id


def _check_remediation(settings: Settings, body: ServiceBase) -> None:
    """A declared remediation must be able to run: its command allowed by COMMAND_ALLOWLIST as it stands, its
    webhook past the SSRF guard's write-time rules."""
    remediation = body.remediation
    if remediation is None:
        return
    if remediation.command is not None:
        if not settings.command_allowlist:
            raise Invalid("remediation.command: COMMAND_ALLOWLIST is empty, so remediate_command runs nothing")
        try:
            allowed_rule(settings.command_allowlist, remediation.command, None, None)
        except CommandNotAllowed as err:
            raise Invalid(f"remediation.command: {err}") from None
    if remediation.webhook is not None:
        try:
            check_url(remediation.webhook, OutboundPolicy.from_settings(settings))
        except (BlockedTarget, ValueError) as err:
            raise Invalid(f"remediation.webhook: {err}") from None


def _changed(session: Session, name: str, action: str, actor: Actor) -> None:
    publish(session, Event(kind="service.changed", data={"name": name, "action": action, "actor": actor.name}))


def register_service(*, session: Session, settings: Settings, data: ServiceCreate, actor: Actor) -> Service:
    """Register a service to monitor (Conflict when the name is taken)."""
    body = ServiceBase.model_validate(data.model_dump(exclude={"name"}))
    team_id = validate_references(session=session, settings=settings, name=data.name, body=body)
    config = body.model_dump(mode="json")
    row = Service(name=data.name, config=config, team_id=team_id, enabled=body.enabled, created_by=actor.name)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"a service named {data.name!r} exists (PUT changes it)") from None
    record_audit(
        session, actor=actor, action="service.create", target_type="service", target_id=data.name, after=config
    )
    _changed(session, data.name, "create", actor)
    session.commit()
    session.refresh(row)
    return row


def replace_service(*, session: Session, settings: Settings, name: str, body: ServiceBase, actor: Actor) -> Service:
    """Change a service (the whole definition); a shorter interval brings its next check forward."""
    row = find_service(session=session, name=name, for_update=True)
    team_id = validate_references(session=session, settings=settings, name=name, body=body)
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
        session, actor=actor, action="service.update", target_type="service", target_id=name, before=before,
        after=row.config,
    )  # fmt: skip
    _changed(session, name, "update", actor)
    session.commit()
    session.refresh(row)
    return row


def set_paused(*, session: Session, name: str, paused: bool, actor: Actor) -> Service:
    """Pause (no checks, no incidents) or resume a service's monitoring; nothing else of it changes."""
    row = find_service(session=session, name=name, for_update=True)
    if row.enabled != paused:  # already as asked: nothing to record
        session.rollback()
        return row
    before = row.config
    row.config = {**before, "enabled": not paused}
    row.enabled, row.updated_at = not paused, utcnow()
    action = "service.pause" if paused else "service.resume"
    record_audit(
        session, actor=actor, action=action, target_type="service", target_id=name,
        before={"enabled": before.get("enabled", True)}, after={"enabled": not paused},
    )  # fmt: skip
    _changed(session, name, "pause" if paused else "resume", actor)
    session.commit()
    session.refresh(row)
    return row


def remove_service(*, session: Session, name: str, actor: Actor) -> None:
    """Remove a service and its results (Conflict while other services depend on it)."""
    row = find_service(session=session, name=name)
    dependents = [other.name for other in session.exec(select(Service)) if name in other.config.get("dependencies", [])]
    if dependents:
        raise Conflict(f"{', '.join(sorted(dependents))} depend on {name}")
    session.delete(row)
    record_audit(session, actor=actor, action="service.delete", target_type="service", target_id=name)
    _changed(session, name, "delete", actor)
    session.commit()


def request_check(*, session: Session, name: str, actor: Actor) -> datetime:
    """Have the monitor check the service at its next window rather than at its next interval (Conflict while
    paused). Returns when it was asked."""
    row = find_service(session=session, name=name)
    if not row.enabled:
        raise Conflict(f"{name} is paused: resume it to check it")
    now = utcnow()
    session.execute(CHECK_NOW, {"service_id": row.id, "now": now})
    record_audit(session, actor=actor, action="service.check_now", target_type="service", target_id=name)
    session.commit()
    return now


def service_config(row: Service) -> dict[str, Any]:
    """The service's definition as the API answers it (with its name)."""
    return {"name": row.name, **row.config}
