"""Storing playbook versions (validated against the installed agents): every save, restore and fork is a new
immutable version with its author, time and message; diffs between versions; the playbooks a caller may see.
Reading them is core/playbook_store.py (re-exported here); sharing rules are services/playbook_sharing.py."""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.errors import Conflict
from core.identity import Team
from core.playbook import Playbook, PlaybookError, check_agents, with_agent_defaults
from core.playbook_access import can_view
from core.playbook_store import BUILTIN_VERSION, PlaybookNotFound, builtin_default, choose_playbook, load_playbook
from core.services import Service
from core.tables import PlaybookSharing, PlaybookVersion
from services.agents import all_agent_specs
from services.playbook_sharing import (
    Caller,
    PlaybookHidden,
    check_create,
    check_edit,
    check_view,
    exists,
    set_sharing,
    sharing_of,
    sharing_public,
    team_ids_of,
    team_named,
)

__all__ = [
    "BUILTIN_VERSION",
    "PlaybookConflict",
    "PlaybookHidden",
    "PlaybookNotFound",
    "builtin_default",
    "canonical_yaml",
    "choose_playbook",
    "diff_versions",
    "fork_playbook",
    "latest_playbooks",
    "list_versions",
    "load_playbook",
    "restore_version",
    "save_playbook",
    "set_sharing",
    "sharing_of",
    "version_row",
    "visible_playbooks",
]

MESSAGE_MAX = 500  # a version's message, as the column allows


class PlaybookConflict(Conflict):
    pass


def save_playbook(
    *,
    session: Session,
    actor: Actor,
    playbook: Playbook,
    message: str | None = None,
    principal: Caller | None = None,
    owner_team: str | None = None,
) -> Playbook:
    """Store the playbook as its next version (validated against the known agents; audited as playbook.create or
    playbook.update). `message` says what the save changed (at most 500 characters). With `principal`: a new id
    needs an admin, or a responder naming one of their teams as `owner_team`; a new version needs edit rights."""
    message = _clean_message(message)
    specs = all_agent_specs(session)
    check_agents(playbook, specs)
    playbook = with_agent_defaults(playbook, specs)
    _lock(session, playbook.id)
    if exists(session=session, playbook_id=playbook.id):
        try:
            sharing = check_edit(session=session, principal=principal, playbook_id=playbook.id)
        except PlaybookHidden:
            raise PlaybookConflict(f"id: playbook id {playbook.id} is taken; choose another id") from None
        current = (sharing_public(session=session, sharing=sharing) or {}).get("owner_team")
        if owner_team is not None and owner_team != current:
            raise PlaybookError(f"owner_team: playbook {playbook.id} exists; change its owner through its sharing")
        return _store(session, actor, playbook, message=message, action="playbook.update")
    team = team_named(session=session, name=owner_team)
    check_create(session=session, principal=principal, owner_team=team)
    if team is not None:
        session.add(PlaybookSharing(playbook_id=playbook.id, owner_team_id=team.id, updated_by=actor.name))
    return _store(session, actor, playbook, message=message, action="playbook.create")


def restore_version(
    *,
    session: Session,
    actor: Actor,
    playbook_id: str,
    version: int,
    principal: Caller | None = None,
    message: str | None = None,
) -> Playbook:
    """A new version whose definition is version `version`'s (audited as playbook.restore); its message says
    "restored from vN" unless one is given. Still checked against the installed agents."""
    message = _clean_message(message) or f"restored from v{version}"
    _lock(session, playbook_id)
    check_edit(session=session, principal=principal, playbook_id=playbook_id)
    old = _playbook(version_row(session=session, playbook_id=playbook_id, version=version))
    check_agents(old, all_agent_specs(session))
    return _store(session, actor, old, message=message, action="playbook.restore", before={"version": version})


def fork_playbook(
    *,
    session: Session,
    actor: Actor,
    source_id: str,
    version: int | None,
    new_id: str,
    new_name: str | None,
    principal: Caller | None = None,
    owner_team: str | None = None,
    message: str | None = None,
) -> Playbook:
    """Copy a version (the latest when None) under a new id as its version 1, with its provenance (audited as
    playbook.fork). The fork keeps the source's visibility; its owner is `owner_team`, else the source's."""
    message = _clean_message(message)
    source_sharing = check_view(session=session, principal=principal, playbook_id=source_id)
    row = version_row(session=session, playbook_id=source_id, version=version)
    _lock(session, new_id)
    if exists(session=session, playbook_id=new_id):
        raise PlaybookConflict(f"id: playbook id {new_id} is taken; choose another id")
    team = team_named(session=session, name=owner_team)
    owner_id = team.id if team is not None else (source_sharing.owner_team_id if source_sharing else None)
    if principal is not None:
        check_create(session=session, principal=principal, owner_team=_team_or_none(session, owner_id))
    definition = {**row.definition, "id": new_id, "name": new_name or f"{row.name} (fork)", "version": 1}
    try:
        fork = Playbook.model_validate(definition)
    except ValidationError as err:
        raise PlaybookError(f"fork: {err.errors()[0]['msg']}") from None
    check_agents(fork, all_agent_specs(session))
    if source_sharing is not None or owner_id is not None:
        visibility = source_sharing.visibility if source_sharing else "everyone"
        session.add(
            PlaybookSharing(playbook_id=new_id, owner_team_id=owner_id, visibility=visibility, updated_by=actor.name)
        )
    return _store(
        session,
        actor,
        fork,
        message=message or f"forked from {source_id} v{row.version}",
        action="playbook.fork",
        forked_from=(source_id, row.version),
        before={"id": source_id, "version": row.version},
    )


def list_versions(*, session: Session, playbook_id: str, principal: Caller | None = None) -> list[PlaybookVersion]:
    """Every version of the playbook, oldest first (PlaybookHidden when none, or the caller may not see it)."""
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    rows = session.exec(
        select(PlaybookVersion).where(PlaybookVersion.playbook_id == playbook_id).order_by(col(PlaybookVersion.version))
    ).all()
    if not rows:
        raise PlaybookHidden(f"playbook {playbook_id} does not exist")
    return list(rows)


def version_row(*, session: Session, playbook_id: str, version: int | None) -> PlaybookVersion:
    """One stored version (the latest when None)."""
    query = select(PlaybookVersion).where(PlaybookVersion.playbook_id == playbook_id)
    if version is not None:
        query = query.where(PlaybookVersion.version == version)
    row = session.exec(query.order_by(col(PlaybookVersion.version).desc())).first()
    if row is None:
        if version is not None and exists(session=session, playbook_id=playbook_id):
            raise PlaybookNotFound(f"version: playbook {playbook_id} has no version {version}")
        raise PlaybookHidden(f"playbook {playbook_id} does not exist")
    return row


def canonical_yaml(definition: dict[str, Any]) -> str:
    """A definition as the diff compares it: YAML with sorted keys, block style, the version number left out (two
    equal definitions read the same whatever their versions)."""
    body = {key: value for key, value in definition.items() if key != "version"}
    dumped: str = yaml.safe_dump(body, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1000)
    return dumped


def diff_versions(*, session: Session, playbook_id: str, a: int, b: int, principal: Caller | None = None) -> list[str]:
    """Unified diff lines (3 lines of context, no trailing newlines) from version a to version b of the canonical
    YAML of their definitions; empty when they are equal."""
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    old = version_row(session=session, playbook_id=playbook_id, version=a)
    new = version_row(session=session, playbook_id=playbook_id, version=b)
    return list(
        difflib.unified_diff(
            canonical_yaml(old.definition).splitlines(),
            canonical_yaml(new.definition).splitlines(),
            fromfile=f"{playbook_id} v{a}",
            tofile=f"{playbook_id} v{b}",
            lineterm="",
        )
    )


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


def visible_playbooks(
    *,
    session: Session,
    principal: Caller | None,
    incident_type: str | None = None,
    team: str | None = None,
    owner: str | None = None,
    service: str | None = None,
) -> list[PlaybookVersion]:
    """The latest version of every playbook the caller may see (None: all), filtered by incident type, owner team
    (name), owner (who stored version 1) and service (the playbook the service names as its default_playbook,
    and those for the incident types its outages and slowdowns open)."""
    rows = latest_playbooks(session=session)
    sharing = {s.playbook_id: s for s in session.exec(select(PlaybookSharing)).all()}
    mine = team_ids_of(session=session, user_id=principal.user_id) if principal is not None else set()
    rows = [r for r in rows if principal is None or can_view(principal, sharing.get(r.playbook_id), mine)]
    if incident_type is not None:
        rows = [r for r in rows if r.incident_type == incident_type]
    if team is not None:
        team_id = _team_id(session, team)
        rows = [r for r in rows if r.playbook_id in sharing and sharing[r.playbook_id].owner_team_id == team_id]
    if owner is not None:
        owned = set(
            session.exec(
                select(PlaybookVersion.playbook_id).where(
                    PlaybookVersion.version == 1, PlaybookVersion.created_by == owner
                )
            ).all()
        )
        rows = [r for r in rows if r.playbook_id in owned]
    if service is not None:
        ids, types = _used_by(session, service)
        rows = [r for r in rows if r.playbook_id in ids or r.incident_type in types]
    return rows


def _team_id(session: Session, name: str) -> int | None:
    found = team_named(session=session, name=name, field="team")
    return found.id if found is not None else None


def _used_by(session: Session, service: str) -> tuple[set[str], set[str]]:
    row = session.exec(select(Service).where(Service.name == service)).first()
    if row is None:
        return set(), set()
    config = row.settings()
    types = {config.incident_type} | ({config.degraded_incident.incident_type} if config.degraded_incident else set())
    return ({config.default_playbook} if config.default_playbook else set()), types


def _store(
    session: Session,
    actor: Actor,
    playbook: Playbook,
    *,
    message: str | None,
    action: str,
    forked_from: tuple[str, int] | None = None,
    before: dict[str, Any] | None = None,
) -> Playbook:
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
        forked_from_id=forked_from[0] if forked_from else None,
        forked_from_version=forked_from[1] if forked_from else None,
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
        action=action,
        target_type="playbook",
        target_id=f"{stored.id}@{stored.version}",
        before=before,
        after=row.definition | ({"message": message} if message else {}),
    )
    return stored


def _lock(session: Session, playbook_id: str) -> None:
    """Saves of one playbook id wait for each other until commit: the second reads the first's version and
    stores the next one, instead of failing on the same number."""
    session.connection().execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"playbook:{playbook_id}"}
    )


def _playbook(row: PlaybookVersion) -> Playbook:
    return Playbook.model_validate(row.definition)


def _team_or_none(session: Session, team_id: int | None) -> Team | None:
    return session.get(Team, team_id) if team_id is not None else None


def _clean_message(message: str | None) -> str | None:
    if message is None:
        return None
    message = message.strip()
    if len(message) > MESSAGE_MAX:
        raise PlaybookError(f"message: at most {MESSAGE_MAX} characters (got {len(message)})")
    return message or None
