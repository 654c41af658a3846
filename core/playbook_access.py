"""Who may see and who may change a playbook, pure (no I/O): the API, the pages and the CLI judge with these.

A playbook's sharing (core.tables.PlaybookSharing, one row for all its versions) names an owner team and a
visibility: `team` — only the owner team's members and admins see it; `everyone` — every user sees it. Admins
edit every playbook; responders and above edit the ones their team owns. A playbook with no sharing row is what
every playbook was before sharing existed: everyone sees it, only admins change it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from core.roles import ROLE_RANK

EDITOR_ROLE = "responder"  # the least role that edits its team's playbooks (and creates playbooks for its team)


class Caller(Protocol):
    """Whoever asks (api.auth.Principal, a page's user, the CLI's user): only the role matters here."""

    @property
    def role(self) -> str: ...


class Sharing(Protocol):
    """core.tables.PlaybookSharing, or anything shaped like it."""

    @property
    def owner_team_id(self) -> int | None: ...

    @property
    def visibility(self) -> str: ...


def is_admin(caller: Caller) -> bool:
    return caller.role == "admin"


def can_view(caller: Caller, sharing: Sharing | None, user_teams: Collection[int]) -> bool:
    """Whether the caller sees the playbook at all (lists, reads, versions, diffs); others are told it does not
    exist, so a private playbook's id does not leak."""
    if sharing is None or sharing.visibility != "team" or is_admin(caller):
        return True
    return sharing.owner_team_id is not None and sharing.owner_team_id in user_teams


def can_edit(caller: Caller, sharing: Sharing | None, user_teams: Collection[int]) -> bool:
    """Whether the caller may store a new version, restore one, change its sharing or delete it."""
    if is_admin(caller):
        return True
    if sharing is None or sharing.owner_team_id is None:
        return False  # nobody's team owns it: admins only, as before sharing existed
    return _editor(caller) and sharing.owner_team_id in user_teams


def can_create(caller: Caller, owner_team_id: int | None, user_teams: Collection[int]) -> bool:
    """Whether the caller may create a new playbook owned by `owner_team_id` (None: no owner team)."""
    if is_admin(caller):
        return True
    return owner_team_id is not None and _editor(caller) and owner_team_id in user_teams


def _editor(caller: Caller) -> bool:
    return ROLE_RANK.get(caller.role, -1) >= ROLE_RANK[EDITOR_ROLE]
