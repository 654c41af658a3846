"""SQLModel tables (created only by Alembic migrations) and the API models derived from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import field_validator
from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

Severity = Literal["P1", "P2", "P3", "P4"]
IncidentStatus = Literal["open", "in_progress", "resolved", "closed", "reopened"]
# The states of a workflow and of each of its steps, as the dashboard shows them.
WorkflowStatus = Literal["pending", "in_progress", "waiting_approval", "completed", "failed", "cancelled"]
StepStatus = Literal["pending", "running", "completed", "failed", "skipped", "cancelled"]

TITLE_MAX = 200
DESCRIPTION_MAX = 10_000
SERVICE_MAX = 100
URL_MAX = 2048


def utcnow() -> datetime:
    return datetime.now(UTC)


class IncidentBase(SQLModel):
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    description: str = Field(default="", max_length=DESCRIPTION_MAX)
    service: str = Field(
        min_length=1,
        max_length=SERVICE_MAX,
        index=True,
        schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"},
    )
    service_url: str | None = Field(default=None, max_length=URL_MAX)
    severity: Severity = "P3"
    incident_type: str = Field(
        default="default", min_length=1, max_length=100, schema_extra={"pattern": r"^[a-z0-9][a-z0-9_.-]*$"}
    )


class IncidentCreate(IncidentBase):
    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("title must not be blank")
        return value

    @field_validator("service_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("service_url must be an absolute http:// or https:// URL")
        return value


class Incident(IncidentBase, table=True):
    __tablename__ = "incidents"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    severity: str = Field(sa_column=Column(String(2), nullable=False, index=True))  # type: ignore[assignment]
    status: str = Field(default="open", sa_column=Column(String(20), nullable=False, index=True))
    playbook_id: str = Field(default="default", max_length=100)
    workflow_id: str | None = Field(default=None, max_length=200)
    # Who is on it: a user, a team, or both.
    assignee_user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    assignee_team_id: int | None = Field(default=None, foreign_key="teams.id", index=True)
    # A client-chosen key making POST /api/incidents safe to repeat.
    idempotency_key: str | None = Field(
        default=None, sa_column=Column(String(200), unique=True, nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    resolved_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class WorkflowRun(SQLModel, table=True):
    """Projection of an IncidentWorkflow's state, written by activities, read by the dashboard."""

    __tablename__ = "workflows"

    workflow_id: str = Field(primary_key=True, max_length=200)
    incident_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False, index=True)
    )
    playbook_id: str = Field(default="default", max_length=100)
    status: str = Field(default="pending", max_length=20, index=True)
    current_steps: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    error: str | None = None
    # Monotonic per workflow: a late or repeated write of an older state never overwrites a newer one.
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class WorkflowStep(SQLModel, table=True):
    __tablename__ = "workflow_steps"
    __table_args__ = (
        UniqueConstraint("workflow_id", "step_id", name="uq_workflow_steps_workflow_step"),
        Index("ix_workflow_steps_workflow_position", "workflow_id", "position"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    workflow_id: str = Field(foreign_key="workflows.workflow_id", max_length=200)
    step_id: str = Field(max_length=100)
    agent: str = Field(max_length=100)
    position: int = 0
    status: str = Field(default="pending", max_length=20)
    attempt: int = 0
    input: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    output: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    error: str | None = None
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
