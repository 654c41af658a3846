"""The marketplace as people browse it: the configured indexes' agents joined with what this installation knows
about them (installed version, update available, install counts, ratings), and reviews.

Shared by the API (api/routes/marketplace.py), the pages and the CLI (through the API). Installing, updating and
removing is services/agent_install.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session, col, func, select

from core.audit import Actor, record_audit
from core.catalogue import CatalogueAgent, incompatibility, is_newer
from core.errors import Invalid, NotFound
from core.identity import User
from core.marketplace import AgentReview, InstalledAgent
from core.tables import utcnow
from services.agent_install import install_counts, installed
from services.catalogue import Catalogue, Listing

Sort = Literal["name", "rating", "downloads", "newest"]
SORTS: tuple[str, ...] = ("name", "rating", "downloads", "newest")
REVIEW_MAX = 5_000


@dataclass
class AgentCard:
    """One agent in the browse list."""

    name: str
    description: str
    author: str
    kind: str
    capabilities: list[str]
    index: str
    latest: str | None  # the version to install here (None: none runs on this product)
    newest: str  # the highest version the index has
    released_at: str
    installed: str | None
    update_available: bool
    rating: float | None
    ratings: int
    downloads: int  # the index's count
    installs: int  # installs and updates here
    tags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratings(session: Session) -> dict[str, tuple[float, int]]:
    """Average and count of the visible ratings, per agent."""
    rows = session.exec(
        select(AgentReview.agent, func.avg(AgentReview.rating), func.count())
        .where(col(AgentReview.hidden).is_(False))
        .group_by(AgentReview.agent)
    ).all()
    return {agent: (round(float(avg), 2), count) for agent, avg, count in rows}


def _card(
    listing: Listing,
    row: InstalledAgent | None,
    rating: tuple[float, int] | None,
    counts: dict[str, int],
) -> AgentCard:
    agent = listing.agent
    best = listing.latest()
    newest = agent.versions[0]  # parse_index orders them newest first
    return AgentCard(
        name=agent.name,
        description=agent.description,
        author=agent.author,
        kind=agent.kind,
        capabilities=list(agent.capabilities),
        index=listing.index,
        latest=best.version if best else None,
        newest=newest.version,
        released_at=newest.released_at,
        installed=row.version if row else None,
        update_available=bool(row and best and is_newer(best.version, row.version)),
        rating=rating[0] if rating else None,
        ratings=rating[1] if rating else 0,
        downloads=agent.downloads,
        installs=sum(counts.values()),
        tags=list(agent.tags),
    )


def _matches(agent: CatalogueAgent, q: str) -> bool:
    words = q.lower().split()
    haystack = " ".join([agent.name, agent.description, agent.author, " ".join(agent.tags)]).lower()
    return all(word in haystack for word in words)


def browse(
    session: Session,
    catalogue: Catalogue,
    *,
    q: str = "",
    capability: str | None = None,
    kind: str | None = None,
    sort: str = "name",
    installed_only: bool = False,
) -> list[AgentCard]:
    """The catalogue's agents, filtered and sorted (rating, downloads and newest: best first; then by name)."""
    if sort not in SORTS:
        raise Invalid(f"sort: must be one of {', '.join(SORTS)}")
    rows, counts, rated = installed(session), install_counts(session), ratings(session)
    cards = [
        _card(listing, rows.get(listing.name), rated.get(listing.name), counts.get(listing.name, {}))
        for listing in catalogue.listings
        if (not q or _matches(listing.agent, q))
        and (capability is None or capability in listing.agent.capabilities)
        and (kind is None or listing.agent.kind == kind)
        and (not installed_only or listing.name in rows)
    ]
    cards.sort(key=lambda c: c.name)
    if sort == "rating":
        cards.sort(key=lambda c: (c.rating or 0, c.ratings), reverse=True)
    elif sort == "downloads":
        cards.sort(key=lambda c: c.downloads + c.installs, reverse=True)
    elif sort == "newest":
        cards.sort(key=lambda c: c.released_at, reverse=True)
    return cards


@dataclass
class ReviewView:
    id: int
    agent: str
    username: str
    rating: int
    body: str
    version: str
    hidden: bool
    hidden_by: str
    hidden_reason: str
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reviews(session: Session, agent: str, *, include_hidden: bool = False) -> list[ReviewView]:
    query = (
        select(AgentReview, User.username)
        .join(User, col(User.id) == col(AgentReview.user_id))
        .where(AgentReview.agent == agent)
        .order_by(col(AgentReview.updated_at).desc())
    )
    if not include_hidden:
        query = query.where(col(AgentReview.hidden).is_(False))
    return [
        ReviewView(
            id=review.id or 0,
            agent=review.agent,
            username=username,
            rating=review.rating,
            body=review.body,
            version=review.version,
            hidden=review.hidden,
            hidden_by=review.hidden_by,
            hidden_reason=review.hidden_reason,
            created_at=review.created_at,
            updated_at=review.updated_at,
        )
        for review, username in session.exec(query).all()
    ]


def detail(session: Session, catalogue: Catalogue, name: str, *, include_hidden: bool = False) -> dict[str, Any]:
    """Everything the detail page and `agents show` say about one agent: offered by an index, installed, or both."""
    listing = catalogue.find(name)
    row = session.get(InstalledAgent, name)
    if listing is None and row is None:
        raise NotFound(f"no agent named {name!r} in the configured indexes or installed from the marketplace")
    counts = install_counts(session).get(name, {})
    rated = ratings(session).get(name)
    out: dict[str, Any] = {
        "name": name,
        "installed": None
        if row is None
        else {
            "version": row.version,
            "kind": row.kind,
            "index": row.index_name,
            "package": row.package_name,
            "wheels": row.wheels,
            "previous_version": row.previous_version,
            "installed_by": row.installed_by,
            "installed_at": row.installed_at,
            "updated_at": row.updated_at,
            "spec": row.spec,
        },
        "installs": counts,
        "rating": rated[0] if rated else None,
        "ratings": rated[1] if rated else 0,
        "reviews": [r.as_dict() for r in reviews(session, name, include_hidden=include_hidden)],
        "offered": listing is not None,
    }
    if listing is not None:
        agent = listing.agent
        out["card"] = _card(listing, row, rated, counts).as_dict()
        out.update(
            description=agent.description,
            author=agent.author,
            homepage=agent.homepage,
            license=agent.license,
            kind=agent.kind,
            capabilities=list(agent.capabilities),
            readme=agent.readme,
            index=listing.index,
            versions=[
                {
                    "version": v.version,
                    "released_at": v.released_at,
                    "changelog": v.changelog,
                    "requires": v.requires,
                    "incompatible": incompatibility(v),
                    "default_risk": v.default_risk,
                    "simulation": v.simulation,
                    "params_schema": v.params_schema,
                    "installs": counts.get(v.version, 0),
                }
                for v in agent.versions
            ],
        )
    return out


def update_preview(catalogue: Catalogue, row: InstalledAgent | None, name: str, version: str | None) -> dict[str, Any]:
    """What updating `name` to `version` (default: the latest this product runs) changes: the changelogs of the
    versions in between and the params schema / default risk before and after."""
    listing = catalogue.get(name)
    target = listing.version(version) if version else listing.latest()
    if target is None:
        raise NotFound(
            f"{name} has no version {version!r} to update to" if version else f"no version of {name} runs here"
        )
    current = row.version if row else None
    between = [
        {"version": v.version, "released_at": v.released_at, "changelog": v.changelog}
        for v in listing.agent.versions
        if (current is None or is_newer(v.version, current))
        and (v.version == target.version or is_newer(target.version, v.version))
    ]
    before = row.spec if row else {}
    changes = {}
    for key, after in (("default_risk", target.default_risk), ("params_schema", target.params_schema)):
        if before.get(key) != after:
            changes[key] = {"before": before.get(key), "after": after}
    return {
        "name": name,
        "from": current,
        "to": target.version,
        "incompatible": incompatibility(target),
        "changelog": between,
        "changes": changes,
    }


def _review_target(session: Session, catalogue: Catalogue, agent: str) -> None:
    if catalogue.find(agent) is None and session.get(InstalledAgent, agent) is None:
        raise NotFound(f"no agent named {agent!r} in the configured indexes or installed from the marketplace")


def save_review(
    session: Session, catalogue: Catalogue, *, actor: Actor, agent: str, rating: int, body: str
) -> AgentReview:
    """Write or replace the caller's one review of `agent` (editing keeps it hidden if an admin hid it)."""
    if actor.user_id is None:
        raise Invalid("reviews are written by people: sign in or use a user's API token")
    if not 1 <= rating <= 5:
        raise Invalid("rating: must be a whole number from 1 to 5")
    body = body.strip()
    if len(body) > REVIEW_MAX:
        raise Invalid(f"body: at most {REVIEW_MAX} characters")
    _review_target(session, catalogue, agent)
    row = session.exec(
        select(AgentReview).where(AgentReview.agent == agent, AgentReview.user_id == actor.user_id).with_for_update()
    ).first()
    installed_row = session.get(InstalledAgent, agent)
    before = None if row is None else {"rating": row.rating, "body": row.body}
    if row is None:
        row = AgentReview(agent=agent, user_id=actor.user_id, rating=rating, body=body)
    row.rating, row.body, row.updated_at = rating, body, utcnow()
    row.version = installed_row.version if installed_row else ""
    session.add(row)
    record_audit(
        session,
        actor=actor,
        action="agent.review.update" if before else "agent.review.create",
        target_type="agent",
        target_id=agent,
        before=before,
        after={"rating": rating, "body": body[:500]},
    )
    return row


def delete_review(session: Session, *, actor: Actor, agent: str) -> None:
    row = session.exec(
        select(AgentReview).where(AgentReview.agent == agent, AgentReview.user_id == actor.user_id)
    ).first()
    if row is None:
        raise NotFound(f"you have no review of {agent!r}")
    session.delete(row)
    record_audit(session, actor=actor, action="agent.review.delete", target_type="agent", target_id=agent)


def hide_review(session: Session, *, actor: Actor, review_id: int, hidden: bool, reason: str = "") -> AgentReview:
    """An admin hides (or shows again) a review; both are audited with the reason."""
    row = session.get(AgentReview, review_id)
    if row is None:
        raise NotFound(f"no review {review_id}")
    if hidden and not reason.strip():
        raise Invalid("reason: say why the review is hidden")
    row.hidden, row.hidden_by, row.hidden_reason = hidden, actor.name if hidden else "", reason.strip()[:500]
    session.add(row)
    record_audit(
        session,
        actor=actor,
        action="agent.review.hide" if hidden else "agent.review.show",
        target_type="agent_review",
        target_id=review_id,
        after={"agent": row.agent, "reason": row.hidden_reason},
    )
    return row
