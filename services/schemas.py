"""Response models of the JSON API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

# Defined with its table: incidents opened outside the API (by monitoring) are audited in the same shape.
from core.tables import IncidentPublic as IncidentPublic


class StepPublic(BaseModel):
    step_id: str
    agent: str
    position: int
    status: str
    attempt: int
    output: dict[str, Any] | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class WorkflowPublic(BaseModel):
    workflow_id: str
    status: str
    current_steps: list[str]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    temporal_ui_url: str
    steps: list[StepPublic]


class LinkPublic(BaseModel):
    id: int
    kind: str  # how it reads from this incident: duplicate_of, duplicated_by, caused_by, causes, related
    incident_id: int  # the other incident
    title: str
    status: str
    severity: str


class IncidentDetail(IncidentPublic):
    workflow: WorkflowPublic | None
    links: list[LinkPublic] = []


class TimelineEntry(BaseModel):
    id: int
    at: datetime
    kind: str  # incident.created, incident.status, incident.assigned, workflow.status, step.status, comment.added…
    workflow_id: str | None
    step_id: str | None
    data: dict[str, Any]


class TimelinePage(BaseModel):
    items: list[TimelineEntry]
    next_after_id: int | None  # pass as after_id for the next page


class CommentCreate(BaseModel):
    body: str = Field(min_length=1, max_length=20_000, description="markdown; raw HTML is shown as text")

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("body must not be blank")
        return value


class CommentPublic(BaseModel):
    id: int
    incident_id: int
    author: str
    author_user_id: int | None
    body: str  # markdown, as written
    body_html: str  # rendered and sanitised
    created_at: datetime


class AttachmentPublic(BaseModel):
    id: int
    incident_id: int
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    uploaded_by: str
    created_at: datetime
    download_url: str


class IncidentPage(BaseModel):
    items: list[IncidentPublic]
    total: int  # how many match, counted up to 10,000 (500 with a text search) …
    total_capped: bool = False  # … and true when more match than that ("10,000+")
    limit: int
    next_cursor: str | None  # pass as cursor for the next page


class UserPublic(BaseModel):
    id: int
    username: str
    display_name: str
    email: str | None
    slack_user_id: str | None = None
    role: str
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class TokenPublic(BaseModel):
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str  # shown once


class TeamPublic(BaseModel):
    id: int
    name: str
    member_ids: list[int]


class AuditEventPublic(BaseModel):
    id: int
    at: datetime
    actor_user_id: int | None
    actor: str
    actor_kind: str
    action: str
    target_type: str
    target_id: str | None
    ip: str | None
    user_agent: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEventPublic]
    next_before_id: int | None  # pass as before_id for the next (older) page
