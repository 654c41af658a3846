"""Monitored services: what to check and how often, when to open an incident, and what agents need to know
(dependencies, log files, metrics queries). Checks and incidents come from these rows (the monitoring issue);
investigation agents read them through the context.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from core.tables import utcnow

SERVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"  # the same as incidents.service
TAG = r"^[a-z0-9][a-z0-9_.:/=-]{0,62}$"
HOST = r"^[A-Za-z0-9.-]{1,253}$|^\[?[0-9A-Fa-f:.]+\]?$"


class HttpCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["http"] = "http"
    url: str = Field(max_length=2048)
    expect_status_below: int = Field(default=400, ge=200, le=600)
    keyword: str | None = Field(default=None, max_length=500, description="the body must contain it")
    tls_expiry_days: int = Field(default=14, ge=0, le=365, description="degraded when the certificate expires sooner")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value


class TcpCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["tcp"]
    host: str = Field(pattern=HOST)
    port: int = Field(ge=1, le=65535)


class DnsCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["dns"]
    name: str = Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")
    record_type: Literal["A", "AAAA"] = "A"
    expect: list[str] = Field(
        default_factory=list, max_length=20, description="addresses that must be among the answers"
    )


Check = Annotated[HttpCheck | TcpCheck | DnsCheck, Field(discriminator="type")]


class MetricsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    query: str = Field(min_length=1, max_length=2000)
    threshold: float
    op: Literal[">", ">=", "<", "<="] = ">"
    unit: str = Field(default="", max_length=20)


class Remediation(BaseModel):
    """How the service is fixed when it is down: the built-in default playbook's `remediate` step runs it (with
    approval: both agents are high risk), unless the diagnosis says the service is healthy."""

    model_config = ConfigDict(extra="forbid")

    # A command, word for word as COMMAND_ALLOWLIST must allow it (remediate_command), e.g.
    # ["systemctl", "restart", "checkout"].
    command: list[str] | None = Field(default=None, min_length=1, max_length=64)
    # Or a URL remediate_webhook POSTs to (signed with REMEDIATION_WEBHOOK_SECRET).
    webhook: str | None = Field(default=None, max_length=2000, pattern=r"^https?://\S+$")

    @model_validator(mode="after")
    def _one(self) -> Remediation:
        if (self.command is None) == (self.webhook is None):
            raise ValueError("give either command or webhook")
        if self.command is not None and any("\x00" in word or len(word) > 4096 for word in self.command):
            raise ValueError("command: a word holds a NUL character or is longer than 4096")
        return self


class DegradedIncident(BaseModel):
    """When a sustained slowdown opens an incident of its own: `after_checks` slow checks in a row (each a pass slower
    than the service's degraded_latency_ms) open one incident of `incident_type` at `severity`, once per slow spell.
    A spell ends at the first check that is not slow; `recovery_threshold` fast passes after it are recorded on the
    incident. If the service then goes down, its outage joins (or reopens) this incident and raises its severity to
    the service's."""

    model_config = ConfigDict(extra="forbid")

    after_checks: int = Field(default=3, ge=1, le=1000, description="slow checks in a row before the incident opens")
    incident_type: str = Field(default="degraded", pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    severity: Literal["P1", "P2", "P3", "P4"] = "P4"


class PublicListing(BaseModel):
    """The service on the public status page (/status): opt-in. The page shows only these words, the service's
    status and its daily availability — never its name, check, errors, incidents' titles or comments. Services
    listed with the same name (and group) are one component there: some of them down is a partial outage."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100, description="the component's name the public reads (not empty)")
    group: str | None = Field(default=None, max_length=100, description="the component group it is listed under")

    @field_validator("name", "group")
    @classmethod
    def _plain_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())  # one line: no tabs, newlines or runs of spaces
        if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
            raise ValueError("must not hold control or format characters")
        if not value and info.field_name == "name":
            raise ValueError("give the name the public reads")
        return value or None


class ServiceBase(BaseModel):
    """What the API accepts (and answers, with the stored fields)."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=2000)
    check: Check
    interval_seconds: float = Field(default=60, ge=1, le=86_400)
    timeout_seconds: float = Field(default=5, gt=0, le=120)
    # A check that passes but answers slower than this is `degraded` (it works, slowly); empty: half the timeout.
    degraded_latency_ms: float | None = Field(default=None, gt=0, le=120_000)
    # Whether a sustained slowdown opens an incident (DegradedIncident); empty: degraded results open none.
    degraded_incident: DegradedIncident | None = None
    # Consecutive failed checks before an incident opens (flap protection), and passes before it counts as up.
    failure_threshold: int = Field(default=3, ge=1, le=100)
    recovery_threshold: int = Field(default=1, ge=1, le=100)
    # An outage that starts this soon after the service's last incident was resolved reopens that incident (a flap
    # is one incident, not one per flap); 0: every outage opens its own.
    reopen_within_seconds: float = Field(default=900, ge=0, le=7 * 86_400)
    dependencies: list[str] = Field(default_factory=list, max_length=50)
    log_paths: list[str] = Field(default_factory=list, max_length=20)
    metrics_queries: list[MetricsQuery] = Field(default_factory=list, max_length=20)
    tags: list[str] = Field(default_factory=list, max_length=30)
    team: str | None = Field(default=None, max_length=100)
    incident_type: str = Field(default="service_down", pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    default_playbook: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    severity: Literal["P1", "P2", "P3", "P4"] = "P2"
    enabled: bool = True
    remediation: Remediation | None = None
    # On the public status page, and as what; empty: not shown there.
    public: PublicListing | None = None

    @property
    def degraded_above_ms(self) -> float:
        """The latency above which a passing check is `degraded`."""
        return self.degraded_latency_ms or self.timeout_seconds * 500

    @field_validator("dependencies")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(SERVICE_NAME, name):
                raise ValueError(f"{name!r} is not a service name")
        if len(set(value)) != len(value):
            raise ValueError("a dependency is listed twice")
        return value

    @field_validator("log_paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or "\x00" in path or len(path) > 1000:
                raise ValueError(f"{path!r} must be an absolute path")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not re.match(TAG, t)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a tag (lowercase letters, digits and _.:/=-)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _queries_unique(self) -> ServiceBase:
        names = [q.name for q in self.metrics_queries]
        if len(set(names)) != len(names):
            raise ValueError("metrics_queries: two queries have the same name")
        return self

    @model_validator(mode="after")
    def _slow_possible(self) -> ServiceBase:
        # A check slower than its timeout is down, not slow: such a setting would never open anything.
        if self.degraded_incident is not None and self.degraded_above_ms >= self.timeout_seconds * 1000:
            raise ValueError(
                f"degraded_incident: degraded_latency_ms ({self.degraded_above_ms:g} ms) must be below the timeout "
                f"({self.timeout_seconds:g} s), or no check is ever slow"
            )
        return self


class ServiceCreate(ServiceBase):
    name: str = Field(pattern=SERVICE_NAME)


class Service(SQLModel, table=True):
    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("name", name="uq_services_name"),)

    id: int | None = SQLField(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    name: str = SQLField(sa_column=Column(String(100), nullable=False))
    # Everything the API validated (ServiceBase), as JSON: one shape to read for checks and agents.
    config: dict[str, Any] = SQLField(sa_column=Column(JSONB, nullable=False))
    team_id: int | None = SQLField(default=None, sa_column=Column(BigInteger, ForeignKey("teams.id"), nullable=True))
    enabled: bool = True
    created_by: str = SQLField(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))

    def settings(self) -> ServiceBase:
        return ServiceBase.model_validate(self.config)
