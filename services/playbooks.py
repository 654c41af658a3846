"""Storing playbook versions (validated against the installed agents) and listing them; reading them is
core/playbook_store.py (re-exported here)."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.errors import Conflict
from core.playbook import Playbook, PlaybookError, check_agents, with_agent_defaults
from core.playbook_store import BUILTIN_VERSION, PlaybookNotFound, builtin_default, choose_playbook, load_playbook
from core.tables import PlaybookVersion
from services.agents import all_agent_specs

__all__ = [
    "BUILTIN_VERSION",
    "PlaybookConflict",
    "PlaybookNotFound",
    "builtin_default",
    "choose_playbook",
    "latest_playbooks",
    "load_playbook",
    "save_playbook",
]


MESSAGE_MAX = 500  # a version's message, as the column allows


def save_playbook(
    *,
    session: Session,
    actor: Actor,
    playbook: Playbook,
    message: str | None = None,
    principal: object | None = None,
) -> Playbook:
    """Store the playbook as its next version (validated against the known agents; audited). `message` says what the
    save changed (at most 500 characters); `principal`, when given, must hold edit rights (checked from issue 23)."""
    del principal  # edit rights are wired in the next change
    message = _clean_message(message)
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
        message=message,
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


class PlaybookConflict(Conflict):
    pass


def _clean_message(message: str | None) -> str | None:
    if message is None:
        return None
    message = message.strip()
    if len(message) > MESSAGE_MAX:
        raise PlaybookError(f"message: at most {MESSAGE_MAX} characters (got {len(message)})")
    return message or None


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
