"""Response models of the JSON API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


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


class IncidentPublic(BaseModel):
    id: int
    title: str
    description: str
    service: str
    service_url: str | None
    severity: str
    status: str
    incident_type: str
    playbook_id: str
    workflow_id: str | None
    assignee_user_id: int | None
    assignee_team_id: int | None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    closed_at: datetime | None


class IncidentDetail(IncidentPublic):
    workflow: WorkflowPublic | None


class IncidentPage(BaseModel):
    items: list[IncidentPublic]
    total: int
    limit: int
    offset: int


class UserPublic(BaseModel):
    id: int
    username: str
    display_name: str
    email: str | None
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
