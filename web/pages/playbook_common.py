"""What the playbook pages share: who may edit, a playbook's versions, its graph and the stylesheet links."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup
from sqlmodel import Session, col, select

from api.auth import Principal
from core.markdown import render_markdown
from core.tables import PlaybookVersion
from web.pages.playbook_graph import DrawnGraph, GraphStep, draw, steps_of

EDIT_ROLE = "admin"


def may_edit(session: Session, principal: Principal | None, playbook_id: str | None) -> bool:
    """Whether the caller may store a new version of the playbook (a new one when playbook_id is None)."""
    del session, playbook_id
    return principal is not None and principal.can(EDIT_ROLE)


def versions_of(*, session: Session, playbook_id: str) -> list[PlaybookVersion]:
    """Every stored version of a playbook, newest first."""
    rows = session.exec(
        select(PlaybookVersion)
        .where(PlaybookVersion.playbook_id == playbook_id)
        .order_by(col(PlaybookVersion.version).desc())
    ).all()
    return list(rows)


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
