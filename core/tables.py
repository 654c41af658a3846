"""SQLModel tables (created only by Alembic migrations) and the API models derived from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, field_validator
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

Severity = Literal["P1", "P2", "P3", "P4"]
IncidentStatus = Literal["open", "in_progress", "resolved", "closed", "reopened"]
# The incident state machine: where each status may go next.
INCIDENT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("in_progress", "resolved"),
    "in_progress": ("resolved",),
    "resolved": ("closed", "reopened"),
    "closed": ("reopened",),
    "reopened": ("in_progress", "resolved"),
}

# An incident in one of these is over: a new alert or outage of its service opens another incident.
ENDED_STATUSES = ("resolved", "closed")
DEFAULT_SEVERITY = "P3"  # when neither the caller nor the incident type's template says
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
    # Left out: the incident type's template decides (else P3).
    severity: Severity | None = None  # type: ignore[assignment]
    # Run this playbook instead of the one chosen by incident_type.
    playbook_id: str | None = Field(default=None, max_length=100, schema_extra={"pattern": r"^[a-z0-9][a-z0-9_.-]*$"})

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
    # Also ix_incidents_text_trgm (migration 0005): a trigram index for the list's text filter.
    __table_args__ = (
        Index("ix_incidents_updated_at_id", "updated_at", "id"),
        # The list's severity order is `severity, id DESC`: an index in that same order (a backward scan of
        # (severity, id) cannot serve mixed directions; Postgres sorted instead: 100 ms at a million incidents).
        Index("ix_incidents_severity_id_desc", "severity", text("id DESC")),
        Index("ix_incidents_incident_type", "incident_type"),
        Index("ix_incidents_workflow_id", "workflow_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    severity: str = Field(sa_column=Column(String(2), nullable=False, index=True))  # type: ignore[assignment]
    status: str = Field(default="open", sa_column=Column(String(20), nullable=False, index=True))
    playbook_id: str = Field(default="default", max_length=100)
    playbook_version: int = 1
    workflow_id: str | None = Field(default=None, max_length=200)  # the latest run of its playbook
    workflow_runs: int = 1  # how many times the playbook was started (reopen → restart adds one)
    # Who is on it: a user, a team, or both.
    assignee_user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    assignee_team_id: int | None = Field(default=None, foreign_key="teams.id", index=True)
    # A client-chosen key making POST /api/incidents safe to repeat.
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(200), unique=True, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    acknowledged_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class AcknowledgeLink(SQLModel, table=True):
    """A single-use "Acknowledge incident #N" link in one person's escalation email. The link is the credential
    and names that person; only the hash of its random token is kept (as for approval links)."""

    __tablename__ = "acknowledge_links"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False, index=True))
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="users.id")
    recipient: str = Field(max_length=320)
    level: int  # the escalation level whose email carried it
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class WorkflowRun(SQLModel, table=True):
    """Projection of an IncidentWorkflow's state, written by activities, read by the dashboard."""

    __tablename__ = "workflows"

    workflow_id: str = Field(primary_key=True, max_length=200)
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False, index=True))
    playbook_id: str = Field(default="default", max_length=100)
    playbook_version: int = 1
    status: str = Field(default="pending", max_length=20, index=True)
    current_steps: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    # Run-time changes (add/remove step, edit params, retry, abort): who, when, what.
    changes: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    error: str | None = None
    # Monotonic per workflow: a late or repeated write of an older state never overwrites a newer one.
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


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
    attempt: int = 0  # activity attempts in the latest run
    runs: int = 0  # times the step was started (retries by a human, repeats)
    note: str | None = None  # why it was skipped or cancelled
    input: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    output: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    error: str | None = None
    # The params the step runs with as the workflow holds them (redacted); NULL: written before migration 0022.
    params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class PlaybookVersion(SQLModel, table=True):
    """One immutable version of a playbook; incidents pin the version they started with."""

    __tablename__ = "playbooks"
    __table_args__ = (UniqueConstraint("playbook_id", "version", name="uq_playbooks_id_version"),)

    id: int | None = Field(default=None, primary_key=True)
    playbook_id: str = Field(max_length=100, index=True)
    version: int
    name: str = Field(max_length=200)
    incident_type: str = Field(max_length=100, index=True)
    definition: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_by: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    message: str | None = Field(default=None, max_length=500)  # what the save changed, as its author said
    forked_from_id: str | None = Field(default=None, max_length=100)  # a fork's first version: what it copied
    forked_from_version: int | None = None


PLAYBOOK_VISIBILITIES = ("team", "everyone")


class PlaybookSharing(SQLModel, table=True):
    """Who owns a playbook (all its versions) and who sees it: `team` — its owner team's members and admins;
    `everyone` — every user. No row: everyone sees it, admins edit it."""

    __tablename__ = "playbook_sharing"
    __table_args__ = (CheckConstraint("visibility IN ('team', 'everyone')", name="ck_playbook_sharing_visibility"),)

    playbook_id: str = Field(max_length=100, primary_key=True)
    owner_team_id: int | None = Field(default=None, foreign_key="teams.id")
    visibility: str = Field(default="everyone", max_length=20)
    updated_by: str | None = Field(default=None, max_length=100)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class PlaybookDryRun(SQLModel, table=True):
    """A playbook run in simulation mode: a real Temporal workflow whose agents only read or say what they would do;
    never an incident. `state` is its last WorkflowState, `report` what it found (would ask, would run, …)."""

    __tablename__ = "playbook_dry_runs"
    __table_args__ = (
        UniqueConstraint("workflow_id", name="uq_playbook_dry_runs_workflow_id"),
        Index("ix_playbook_dry_runs_playbook_id_id", "playbook_id", "id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    workflow_id: str = Field(max_length=200)
    playbook_id: str = Field(max_length=100)
    playbook_version: int
    status: str = Field(default="running", max_length=20)
    variables: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    sample: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    state: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    created_by: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


EVENTS_CHANNEL = "agent_monitor_events"  # NOTIFY channel; the payload is an events.id


class Event(SQLModel, table=True):
    """Every transition the dashboard shows; each insert is announced with NOTIFY (id only)."""

    __tablename__ = "events"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    kind: str = Field(max_length=50)  # workflow.status, step.status, …
    incident_id: int | None = Field(default=None, sa_column=Column(BigInteger, index=True))
    workflow_id: str | None = Field(default=None, max_length=200)
    step_id: str | None = Field(default=None, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))


class AgentRun(SQLModel, table=True):
    """One execution of an agent activity (every attempt): what ran, where, how it ended."""

    __tablename__ = "agent_runs"
    __table_args__ = (
        UniqueConstraint("activity_key", name="uq_agent_runs_activity_key"),
        Index("ix_agent_runs_workflow_step", "workflow_id", "step_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    activity_key: str = Field(max_length=400)  # workflow run + activity id + attempt: one row per attempt
    workflow_id: str = Field(max_length=200)
    step_id: str = Field(max_length=100)
    agent: str = Field(max_length=100)
    attempt: int
    worker: str | None = Field(default=None, max_length=200)
    status: str = Field(default="running", max_length=20, index=True)  # running | succeeded | failed
    error: str | None = None
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class RemediationRun(SQLModel, table=True):
    """A remediation's side effect, once per step attempt: the intent, written before the command runs or the
    request is sent, then its outcome. Temporal's retries of the activity share the attempt key and find this
    row instead of acting again (activities/remediation_ledger.py)."""

    __tablename__ = "remediation_runs"
    __table_args__ = (UniqueConstraint("workflow_id", "step_id", "attempt_key", name="uq_remediation_runs_attempt"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    workflow_id: str = Field(max_length=200)
    step_id: str = Field(max_length=100)
    attempt_key: str = Field(max_length=50)  # the step's run (and check): a person's retry_step makes a new one
    agent: str = Field(max_length=100)
    action: str = Field(sa_column=Column(Text, nullable=False))  # what it does, redacted: the argv, the URL
    worker: str = Field(max_length=200)  # pid@host of the attempt that wrote the intent
    activity_attempt: int  # Temporal's attempt number that wrote it
    sends: int = 1  # a webhook re-sent with the same webhook-id after an answer that did not end it; a command: 1
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    # The outcome; all empty while it runs, or for good when its worker died before writing it.
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    ok: bool | None = None
    exit_code: int | None = None
    http_status: int | None = None
    summary: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))  # the failure that ended it, or the last one
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))  # the AgentResult, redacted


class IncidentPublic(BaseModel):
    """An incident as the API shows it (and as the audit log records it)."""

    id: int
    title: str
    description: str
    service: str
    service_url: str | None
    severity: str
    status: str
    incident_type: str
    playbook_id: str
    workflow_id: str | None  # the latest run of its playbook
    workflow_runs: int  # reopen → restart starts another run (<first workflow id>-run2, …)
    assignee_user_id: int | None
    assignee_team_id: int | None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    closed_at: datetime | None


PublicUpdateStatus = Literal["investigating", "identified", "monitoring", "resolved"]
PUBLIC_UPDATE_MAX = 5000


class IncidentPublicUpdate(SQLModel, table=True):
    """What a responder tells the public about an incident (the public status page shows these texts, and nothing
    else of the incident, while it is active and for a week after). `status` is the stage it announces; posting
    "resolved" does not resolve the incident. Who wrote it stays internal."""

    __tablename__ = "incident_public_updates"
    __table_args__ = (Index("ix_incident_public_updates_incident_id_id", "incident_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False))
    status: str = Field(max_length=20)
    body: str = Field(sa_column=Column(Text, nullable=False))
    author_user_id: int | None = Field(default=None, foreign_key="users.id")
    author: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


class PublicUpdateCreate(BaseModel):
    status: PublicUpdateStatus
    body: str = Field(min_length=1, max_length=PUBLIC_UPDATE_MAX)

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("write what the public should read")
        return value
