"""Stored playbook versions; choosing and pinning the playbook an incident runs."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.agent_service import all_agent_specs
from core.audit import Actor, record_audit
from core.playbook import Playbook, check_agents, default_playbook, with_agent_defaults
from core.settings import Settings
from core.tables import PlaybookVersion

BUILTIN_VERSION = 0  # the built-in default playbook, used until someone stores one for the type


class PlaybookNotFound(LookupError):
    pass


def builtin_default(settings: Settings) -> Playbook:
    return default_playbook(
        verify_checks=settings.verify_checks, verify_interval_seconds=settings.verify_interval_seconds
    ).model_copy(update={"version": BUILTIN_VERSION})


def save_playbook(*, session: Session, actor: Actor, playbook: Playbook) -> Playbook:
    """Store the playbook as its next version (validated against the known agents; audited)."""
    specs = all_agent_specs(session)
    check_agents(playbook, specs)
    playbook = with_agent_defaults(playbook, specs)
    latest = session.exec(
        select(func.max(PlaybookVersion.version)).where(PlaybookVersion.playbook_id == playbook.id)
    ).one()
    stored = playbook.model_copy(update={"version": (latest or 0) + 1})
    row = PlaybookVersion(
        playbook_id=stored.id,
        version=stored.version,
        name=stored.name,
        incident_type=stored.incident_type,
        definition=stored.model_dump(mode="json"),
        created_by=actor.name,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise PlaybookConflict(f"playbook {playbook.id} changed at the same time; send it again") from None
    record_audit(
        session,
        actor=actor,
        action="playbook.create",
        target_type="playbook",
        target_id=f"{stored.id}@{stored.version}",
        after=row.definition,
    )
    return stored


class PlaybookConflict(RuntimeError):
    pass


def load_playbook(*, session: Session, settings: Settings, playbook_id: str, version: int | None = None) -> Playbook:
    """A stored version (the latest when version is None), or the built-in default."""
    query = select(PlaybookVersion).where(PlaybookVersion.playbook_id == playbook_id)
    if version is not None:
        query = query.where(PlaybookVersion.version == version)
    row = session.exec(query.order_by(col(PlaybookVersion.version).desc())).first()
    if row is not None:
        return Playbook.model_validate(row.definition)
    if playbook_id == "default" and version in (None, BUILTIN_VERSION):
        return builtin_default(settings)
    raise PlaybookNotFound(f"playbook {playbook_id}" + (f" version {version}" if version else "") + " does not exist")


def choose_playbook(*, session: Session, settings: Settings, incident_type: str, playbook_id: str | None) -> Playbook:
    """An explicit playbook, else the latest one for the incident type, else the built-in default."""
    if playbook_id:
        return load_playbook(session=session, settings=settings, playbook_id=playbook_id)
    row = session.exec(
        select(PlaybookVersion)
        .where(PlaybookVersion.incident_type == incident_type)
        .order_by(col(PlaybookVersion.created_at).desc(), col(PlaybookVersion.version).desc())
    ).first()
    if row is not None:
        return Playbook.model_validate(row.definition)
    return builtin_default(settings)


def latest_playbooks(*, session: Session) -> list[PlaybookVersion]:
    latest = (
        select(PlaybookVersion.playbook_id, func.max(PlaybookVersion.version).label("version"))
        .group_by(PlaybookVersion.playbook_id)
        .subquery()
    )
    rows = session.exec(
        select(PlaybookVersion)
        .join(
            latest,
            (col(PlaybookVersion.playbook_id) == latest.c.playbook_id)
            & (col(PlaybookVersion.version) == latest.c.version),
        )
        .order_by(col(PlaybookVersion.playbook_id))
    ).all()
    return list(rows)
