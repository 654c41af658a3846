"""Playbook sharing: its owner team and visibility (one row for all its versions), and the checks every playbook
use case makes with them (core/playbook_access.py holds the rules). A caller that may not see a playbook is told
it does not exist (404), so a team's private playbook ids do not leak; one that sees it but may not change it
gets 403."""

from __future__ import annotations

from typing import Protocol

from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.errors import Forbidden, Invalid, NotFound
from core.identity import Team, TeamMember
from core.playbook_access import can_create, can_edit, can_view
from core.tables import PLAYBOOK_VISIBILITIES, PlaybookSharing, PlaybookVersion, utcnow


class Caller(Protocol):
    """Who asks (api.auth.Principal, a page's user): their user id and role."""

    @property
    def user_id(self) -> int: ...

    @property
    def role(self) -> str: ...


class PlaybookHidden(NotFound):
    """The playbook does not exist, or the caller may not see it: the same answer for both."""


def sharing_of(*, session: Session, playbook_id: str) -> PlaybookSharing | None:
    """The playbook's owner team and visibility; None: everyone sees it, admins edit it."""
    return session.get(PlaybookSharing, playbook_id)


def team_ids_of(*, session: Session, user_id: int) -> set[int]:
    return set(session.exec(select(TeamMember.team_id).where(TeamMember.user_id == user_id)).all())


def team_named(*, session: Session, name: str | None, field: str = "owner_team") -> Team | None:
    if name is None:
        return None
    team = session.exec(select(Team).where(Team.name == name)).first()
    if team is None:
        raise Invalid(f"{field}: no team is named {name!r}")
    return team


def team_names(*, session: Session, team_ids: set[int]) -> dict[int, str]:
    if not team_ids:
        return {}
    rows = session.exec(select(Team.id, Team.name).where(col(Team.id).in_(team_ids))).all()
    return {team_id: name for team_id, name in rows if team_id is not None}


def exists(*, session: Session, playbook_id: str) -> bool:
    found = session.exec(select(PlaybookVersion.id).where(PlaybookVersion.playbook_id == playbook_id).limit(1))
    return found.first() is not None


def check_view(*, session: Session, principal: Caller | None, playbook_id: str) -> PlaybookSharing | None:
    """The sharing row, when the caller may see the playbook; PlaybookHidden otherwise (None: no check)."""
    sharing = sharing_of(session=session, playbook_id=playbook_id)
    if principal is not None and not can_view(principal, sharing, _teams(session, principal, sharing)):
        raise PlaybookHidden(f"playbook {playbook_id} does not exist")
    return sharing


def check_edit(*, session: Session, principal: Caller | None, playbook_id: str) -> PlaybookSharing | None:
    """The sharing row, when the caller may change the playbook: hidden → 404, seen but not editable → 403."""
    sharing = check_view(session=session, principal=principal, playbook_id=playbook_id)
    if principal is not None and not can_edit(principal, sharing, _teams(session, principal, sharing)):
        raise Forbidden(f"you may not change playbook {playbook_id}: {_editors(session, sharing)} may")
    return sharing


def check_create(*, session: Session, principal: Caller | None, owner_team: Team | None) -> None:
    if principal is None:
        return
    teams = team_ids_of(session=session, user_id=principal.user_id)
    if not can_create(principal, owner_team.id if owner_team else None, teams):
        if owner_team is None:
            raise Forbidden("owner_team: name one of your teams as the new playbook's owner (admins may leave it out)")
        raise Forbidden(f"owner_team: you are not a member of {owner_team.name}, or your role cannot edit playbooks")


def set_sharing(
    *,
    session: Session,
    actor: Actor,
    principal: Caller | None,
    playbook_id: str,
    owner_team: str | None,
    visibility: str,
) -> PlaybookSharing:
    """Change who owns and who sees the playbook (audited as playbook.sharing). Non-admins may only give it to
    one of their own teams."""
    if visibility not in PLAYBOOK_VISIBILITIES:
        raise Invalid(f"visibility: must be one of {', '.join(PLAYBOOK_VISIBILITIES)}, not {visibility!r}")
    if not exists(session=session, playbook_id=playbook_id):
        raise PlaybookHidden(f"playbook {playbook_id} does not exist")
    row = check_edit(session=session, principal=principal, playbook_id=playbook_id)
    team = team_named(session=session, name=owner_team)
    if visibility == "team" and team is None:
        raise Invalid("owner_team: visibility team needs an owner team (only its members and admins see it)")
    if principal is not None and principal.role != "admin":
        if team is None or team.id not in team_ids_of(session=session, user_id=principal.user_id):
            raise Forbidden("owner_team: only admins may give a playbook to a team they are not in, or to no team")
    before = sharing_public(session=session, sharing=row)
    if row is None:
        row = PlaybookSharing(playbook_id=playbook_id)
    row.owner_team_id, row.visibility = (team.id if team else None), visibility
    row.updated_by, row.updated_at = actor.name, utcnow()
    session.add(row)
    session.flush()
    after = sharing_public(session=session, sharing=row)
    record_audit(
        session,
        actor=actor,
        action="playbook.sharing",
        target_type="playbook",
        target_id=playbook_id,
        before=before,
        after=after,
    )
    return row


def sharing_public(*, session: Session, sharing: PlaybookSharing | None) -> dict[str, str | None] | None:
    """The sharing as the API shows it: the owner team's name and the visibility (None: no row)."""
    if sharing is None:
        return None
    team = session.get(Team, sharing.owner_team_id) if sharing.owner_team_id is not None else None
    return {"owner_team": team.name if team else None, "visibility": sharing.visibility}


def _teams(session: Session, principal: Caller, sharing: PlaybookSharing | None) -> set[int]:
    if sharing is None or sharing.owner_team_id is None or principal.role == "admin":
        return set()  # the rules do not look at teams then: no query
    return team_ids_of(session=session, user_id=principal.user_id)


def _editors(session: Session, sharing: PlaybookSharing | None) -> str:
    shown = sharing_public(session=session, sharing=sharing)
    if shown is None or shown["owner_team"] is None:
        return "only admins"
    return f"admins and responders (or above) of team {shown['owner_team']}"
