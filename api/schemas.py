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
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None


class IncidentDetail(IncidentPublic):
    workflow: WorkflowPublic | None


class IncidentPage(BaseModel):
    items: list[IncidentPublic]
    total: int
    limit: int
    offset: int
