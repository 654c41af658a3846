"""What people add to an incident besides its status: comments, attachments, links to other incidents,
and the per-type templates new incidents start from."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import field_validator
from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, ForeignKey, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, and_, col, or_, select

from core.audit import Actor, record_audit
from core.errors import Conflict
from core.escalation import EscalationLevel, check_levels
from core.events import incident_event
from core.tables import Incident, Severity, utcnow

COMMENT_MAX = 20_000
LinkKind = Literal["duplicate_of", "caused_by", "related"]
# How a link reads from the other incident's side.
LINK_INVERSE: dict[str, str] = {"duplicate_of": "duplicated_by", "caused_by": "causes", "related": "related"}
ReopenAction = Literal["restart", "resume", "none"]


class IncidentComment(SQLModel, table=True):
    """A comment (markdown) on an incident; append-only through the app."""

    __tablename__ = "incident_comments"
    __table_args__ = (Index("ix_incident_comments_incident_id_id", "incident_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False))
    author_user_id: int | None = Field(default=None, foreign_key="users.id")
    author: str = Field(max_length=200)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class IncidentAttachment(SQLModel, table=True):
    """A file attached to an incident. The bytes live under the attachments directory at `storage_key`."""

    __tablename__ = "incident_attachments"
    __table_args__ = (Index("ix_incident_attachments_incident_id_id", "incident_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False))
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=100)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    storage_key: str = Field(max_length=200)  # chosen by us, never by the uploader
    uploaded_by_user_id: int | None = Field(default=None, foreign_key="users.id")
    uploaded_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class IncidentLink(SQLModel, table=True):
    """`incident_id` <kind> `related_incident_id`, e.g. 12 duplicate_of 9; both incidents show it."""

    __tablename__ = "incident_links"
    __table_args__ = (
        UniqueConstraint("incident_id", "related_incident_id", "kind", name="uq_incident_links_pair_kind"),
        CheckConstraint("incident_id <> related_incident_id", name="ck_incident_links_not_self"),
        Index("ix_incident_links_related", "related_incident_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False))
    related_incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False))
    kind: str = Field(max_length=20)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class IncidentTemplateBase(SQLModel):
    default_severity: Severity = "P3"
    description: str = Field(default="", max_length=10_000)
    # Empty: the playbook chosen by incident type.
    playbook_id: str | None = Field(default=None, max_length=100, schema_extra={"pattern": r"^[a-z0-9][a-z0-9_.-]*$"})
    # What reopening an incident of this type does with its playbook: run it again from the start,
    # resume the failed run (retry its failed step; restart when the run has ended), or nothing.
    on_reopen: ReopenAction = "restart"


class IncidentTemplateBody(IncidentTemplateBase):
    """What the API takes and answers: the stored fields and the escalation policy."""

    # What happens while an incident's run waits for a person (core/escalation.py): levels, in the order they fire.
    escalation: list[EscalationLevel] = Field(default_factory=list)

    @field_validator("escalation")
    @classmethod
    def _levels(cls, value: list[EscalationLevel]) -> list[EscalationLevel]:
        return check_levels(value)


class IncidentTemplate(IncidentTemplateBase, table=True):
    __tablename__ = "incident_templates"

    incident_type: str = Field(primary_key=True, max_length=100)
    default_severity: str = Field(max_length=2)  # type: ignore[assignment]
    on_reopen: str = Field(default="restart", max_length=10)  # type: ignore[assignment]
    escalation: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default="[]")
    )
    updated_by: str = Field(default="", max_length=200)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class LinkConflict(Conflict):
    """The same link, or the same kind the other way round, exists already (a 409)."""


def link_incidents(*, session: Session, incident: Incident, related: Incident, kind: str, actor: Actor) -> IncidentLink:
    """Link two incidents (`incident` <kind> `related`); the same link, or the same kind the other way round (a
    repeat for `related`, a contradiction for the others), is a LinkConflict."""
    assert incident.id is not None and related.id is not None
    if incident.id == related.id:
        raise ValueError("related_incident_id: an incident cannot be linked to itself")
    # Both incidents locked in id order: links between one pair, in either direction, are made one at a time.
    session.exec(select(Incident.id).where(col(Incident.id).in_(sorted((incident.id, related.id)))).with_for_update())
    existing = session.exec(
        select(IncidentLink).where(
            IncidentLink.kind == kind,
            or_(
                and_(IncidentLink.incident_id == incident.id, IncidentLink.related_incident_id == related.id),
                and_(IncidentLink.incident_id == related.id, IncidentLink.related_incident_id == incident.id),
            ),
        )
    ).first()
    if existing is not None:
        session.rollback()
        raise LinkConflict(f"incident {existing.incident_id} is already {kind} incident {existing.related_incident_id}")
    link = IncidentLink(incident_id=incident.id, related_incident_id=related.id, kind=kind, created_by=actor.name)
    session.add(link)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise LinkConflict(f"incident {incident.id} is already {kind} incident {related.id}") from None
    for side, other, shown in ((incident.id, related.id, kind), (related.id, incident.id, LINK_INVERSE[kind])):
        incident_event(
            session, kind="link.added", incident_id=side, actor=actor.name, link=shown, other_incident_id=other
        )
    record_audit(
        session,
        actor=actor,
        action="incident.link",
        target_type="incident",
        target_id=incident.id,
        after={"kind": kind, "related_incident_id": related.id},
    )
    session.commit()
    session.refresh(link)
    return link
