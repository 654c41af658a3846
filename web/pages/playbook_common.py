"""What the playbook pages share: who may edit, a playbook's versions, its graph and the stylesheet links."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup
from sqlmodel import Session, col, select

from api.auth import Principal
from core.errors import Forbidden, NotFound
from core.identity import Team
from core.markdown import render_markdown
from core.playbook_access import can_create, is_admin
from core.tables import PlaybookVersion
from services.playbook_sharing import check_edit, exists, sharing_of, sharing_public, team_ids_of
from services.playbooks import list_versions
from web.pages.playbook_graph import DrawnGraph, GraphStep, draw, steps_of


def may_edit(session: Session, principal: Principal | None, playbook_id: str | None) -> bool:
    """Whether the caller may store a new version of the playbook (or create one, when playbook_id is None or
    names no stored playbook): core/playbook_access.py's rules, through services/playbook_sharing.py."""
    if principal is None:
        return False
    if playbook_id is None or not exists(session=session, playbook_id=playbook_id):
        return may_create(session, principal)
    try:
        check_edit(session=session, principal=principal, playbook_id=playbook_id)
    except (Forbidden, NotFound):
        return False
    return True


def may_create(session: Session, principal: Principal) -> bool:
    """Admins, and responders (or above) for one of their teams."""
    teams = team_ids_of(session=session, user_id=principal.user_id)
    return is_admin(principal) or any(can_create(principal, team, teams) for team in teams)


def team_choices(session: Session, principal: Principal) -> list[str]:
    """The teams the caller may name as a playbook's owner: every team for admins, else their own."""
    query = select(Team.name).order_by(col(Team.name))
    if not is_admin(principal):
        query = query.where(col(Team.id).in_(team_ids_of(session=session, user_id=principal.user_id)))
    return list(session.exec(query).all())


def versions_of(*, session: Session, principal: Principal, playbook_id: str) -> list[PlaybookVersion]:
    """Every stored version of a playbook the caller may see, newest first (none: the built-in default)."""
    if not exists(session=session, playbook_id=playbook_id):
        return []
    return list(reversed(list_versions(session=session, playbook_id=playbook_id, principal=principal)))


def sharing_text(session: Session, playbook_id: str) -> dict[str, str | None]:
    """Owner team and visibility as the pages show them."""
    shown = sharing_public(session=session, sharing=sharing_of(session=session, playbook_id=playbook_id))
    return shown or {"owner_team": None, "visibility": "everyone"}


def markdown(text: str) -> Markup:
    """Instructions as safe HTML (core/markdown.py escapes raw HTML and sanitises the result)."""
    return Markup(render_markdown(text or ""))  # noqa: S704 (sanitised by nh3 in render_markdown)


def graph_of(definition: Mapping[str, Any], *, link_steps: bool) -> DrawnGraph:
    """The stored playbook's DAG, each step linking to its section of the page."""
    steps = steps_of(definition)

    def href(_index: int, step: GraphStep) -> str | None:
        return f"#step-{step.id}" if link_steps and step.id else None

    label = f"Playbook {definition.get('id', '')}: {len(steps)} steps"
    return draw(steps, label=label, href_of=href)


def svg(drawn: DrawnGraph) -> Markup:
    return Markup(drawn.svg)  # noqa: S704 (core/dag_layout.py escapes every text it draws)
