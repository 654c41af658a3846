"""Comments, links between incidents, incident templates and the timeline: service functions."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.collaboration import (
    IncidentComment,
    IncidentLink,
    IncidentTemplate,
    link_incidents,
)
from core.events import incident_event
from core.tables import Event, Incident, utcnow

# Linking lives in core/collaboration.py (scheduled monitoring links an outage's incident to its dependency's).
add_link = link_incidents


def add_comment(*, session: Session, incident: Incident, body: str, actor: Actor) -> IncidentComment:
    """Append a comment, with its timeline event and audit row, to the session's transaction: the caller commits
    (the live event goes out then). Its fields are all set once this returns (no read back after the commit)."""
    assert incident.id is not None
    comment = IncidentComment(incident_id=incident.id, author_user_id=actor.user_id, author=actor.name, body=body)
    session.add(comment)
    session.flush()
    incident_event(
        session,
        kind="comment.added",
        incident_id=incident.id,
        actor=actor.name,
        comment_id=comment.id,
        excerpt=body[:200],
    )
    record_audit(
        session,
        actor=actor,
        action="incident.comment",
        target_type="incident",
        target_id=incident.id,
        after={"comment_id": comment.id},
    )
    return comment


def list_comments(*, session: Session, incident_id: int, after_id: int, limit: int) -> list[IncidentComment]:
    """Oldest first, after a comment id (keyset)."""
    query = (
        select(IncidentComment)
        .where(IncidentComment.incident_id == incident_id, col(IncidentComment.id) > after_id)
        .order_by(col(IncidentComment.id))
        .limit(limit)
    )
    return list(session.exec(query))


def remove_link(*, session: Session, link: IncidentLink, actor: Actor) -> None:
    for side, other in ((link.incident_id, link.related_incident_id), (link.related_incident_id, link.incident_id)):
        incident_event(
            session, kind="link.removed", incident_id=side, actor=actor.name, link=link.kind, other_incident_id=other
        )
    record_audit(
        session,
        actor=actor,
        action="incident.unlink",
        target_type="incident",
        target_id=link.incident_id,
        before={"kind": link.kind, "related_incident_id": link.related_incident_id},
    )
    session.delete(link)
    session.commit()


def timeline(*, session: Session, incident_id: int, after_id: int, limit: int) -> list[Event]:
    """Everything that happened to the incident, oldest first: lifecycle, assignment, workflow and step
    transitions, comments, attachments, links (and, later, approvals and agent messages)."""
    query = (
        select(Event)
        .where(Event.incident_id == incident_id, col(Event.id) > after_id)
        .order_by(col(Event.id))
        .limit(limit)
    )
    return list(session.exec(query))


def template_for(*, session: Session, incident_type: str) -> IncidentTemplate | None:
    return session.get(IncidentTemplate, incident_type)


def save_template(*, session: Session, template: IncidentTemplate, actor: Actor) -> IncidentTemplate:
    """Create or replace the template of an incident type (concurrent saves of a new type: the last one wins)."""
    fields = ("default_severity", "description", "playbook_id", "on_reopen", "escalation")
    table = IncidentTemplate.__table__  # type: ignore[attr-defined]
    values = {field: getattr(template, field) for field in fields}
    # Insert-if-missing, then lock: two first saves of one type cannot both insert (a 500 otherwise).
    created = (
        session.execute(
            insert(table)
            .values(incident_type=template.incident_type, updated_by=actor.name, updated_at=utcnow(), **values)
            .on_conflict_do_nothing(index_elements=[table.c.incident_type])
            .returning(table.c.incident_type)
        ).first()
        is not None
    )
    row = session.exec(
        select(IncidentTemplate).where(IncidentTemplate.incident_type == template.incident_type).with_for_update()
    ).one()
    before = None if created else row.model_dump(mode="json", exclude={"updated_at"})
    for field, value in values.items():
        setattr(row, field, value)
    row.updated_by, row.updated_at = actor.name, utcnow()
    session.add(row)
    record_audit(
        session,
        actor=actor,
        action="incident_template.save",
        target_type="incident_template",
        target_id=template.incident_type,
        before=before,
        after=row.model_dump(mode="json", exclude={"updated_at"}),
    )
    session.commit()
    session.refresh(row)
    return row
