"""Alerts from Alertmanager, Grafana and other monitors: the routing rules that turn an alert into an incident
(service, severity, type, playbook — or drop it), the record of every alert attached to an incident, and the pure
functions that route, fingerprint and describe alerts (unit-tested without a database).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from core.tables import DESCRIPTION_MAX, SERVICE_MAX, TITLE_MAX, Severity, utcnow

AlertStatus = Literal["firing", "resolved"]
MatchOp = Literal["=", "!=", "=~", "!~"]

ROUTE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
SOURCE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,49}$"
SERVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"  # the same as incidents.service
REGEX_MAX = 1_000  # characters of one matcher's regex: matched against every alert, so kept small
DEFAULT_SERVICE_LABELS = ("service", "job", "app")
DEFAULT_SEVERITY_MAP: dict[str, Severity] = {
    "critical": "P1",
    "error": "P2",
    "high": "P2",
    "warning": "P3",
    "info": "P4",
}
DEFAULT_INCIDENT_TYPE = "alert"
UNKNOWN_SERVICE = "unknown"


@lru_cache(maxsize=1024)
def compile_matcher_regex(pattern: str) -> re.Pattern[str]:
    """A matcher's regex, anchored at both ends as Prometheus anchors them; ValueError if it is not one."""
    if len(pattern) > REGEX_MAX:
        raise ValueError(f"a regex may have at most {REGEX_MAX} characters")
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as err:
        raise ValueError(f"not a regular expression: {err}") from None


class Matcher(BaseModel):
    """One condition on a label; a label the alert lacks has the value "" (as in Prometheus)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200)
    op: MatchOp = "="
    value: str = Field(default="", max_length=REGEX_MAX)

    @field_validator("value")
    @classmethod
    def _regex_compiles(cls, value: str, info: Any) -> str:
        if info.data.get("op") in ("=~", "!~"):
            compile_matcher_regex(value)
        return value

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = compile_matcher_regex(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found


class AlertRouteBase(BaseModel):
    """What a routing rule matches and what a match sets (the API's body, and the stored fields)."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(default=100, ge=0, le=1_000_000, description="lower runs first; ties by id")
    enabled: bool = True
    matchers: list[Matcher] = Field(default_factory=list, max_length=20, description="all must match")
    service_label: str | None = Field(
        default=None, min_length=1, max_length=200, description="the label naming the service (else service, job, app)"
    )
    service: str | None = Field(default=None, pattern=SERVICE_NAME, description="a fixed service; wins over labels")
    severity_map: dict[str, Severity] = Field(
        default_factory=dict, max_length=50, description="severity label value → P1..P4, before the default map"
    )
    incident_type: str = Field(default=DEFAULT_INCIDENT_TYPE, pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    playbook_id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    drop: bool = Field(default=False, description="ignore matching alerts (e.g. Watchdog)")

    @field_validator("severity_map")
    @classmethod
    def _lowercase_keys(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        if any(not key or len(key) > 100 for key in value):
            raise ValueError("keys are severity label values of 1 to 100 characters")
        return {key.lower(): severity for key, severity in value.items()}


class AlertRouteCreate(AlertRouteBase):
    name: str = Field(pattern=ROUTE_NAME)


class AlertRoute(SQLModel, table=True):
    __tablename__ = "alert_routes"
    __table_args__ = (
        UniqueConstraint("name", name="uq_alert_routes_name"),
        Index("ix_alert_routes_priority_id", "priority", "id"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    name: str = SQLField(sa_column=Column(String(100), nullable=False))
    priority: int = SQLField(default=100, sa_column=Column(Integer, nullable=False))
    enabled: bool = True
    matchers: list[dict[str, Any]] = SQLField(default_factory=list, sa_column=Column(JSONB, nullable=False))
    service_label: str | None = SQLField(default=None, sa_column=Column(String(200), nullable=True))
    service: str | None = SQLField(default=None, sa_column=Column(String(100), nullable=True))
    severity_map: dict[str, str] = SQLField(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    incident_type: str = SQLField(default=DEFAULT_INCIDENT_TYPE, sa_column=Column(String(100), nullable=False))
    playbook_id: str | None = SQLField(default=None, sa_column=Column(String(100), nullable=True))
    drop: bool = False
    created_by: str = SQLField(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))

    def rule(self) -> AlertRouteCreate:
        return AlertRouteCreate.model_validate(
            self.model_dump(exclude={"id", "created_by", "created_at", "updated_at"})
        )


class IncidentAlert(SQLModel, table=True):
    """One alert (source + fingerprint) attached to one incident: its latest state and how often it came."""

    __tablename__ = "incident_alerts"
    __table_args__ = (
        UniqueConstraint("source", "fingerprint", "incident_id", name="uq_incident_alerts_source_fingerprint_incident"),
        CheckConstraint("status IN ('firing', 'resolved')", name="ck_incident_alerts_status"),
        Index("ix_incident_alerts_incident_id", "incident_id"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    incident_id: int = SQLField(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False))
    source: str = SQLField(sa_column=Column(String(50), nullable=False))
    fingerprint: str = SQLField(sa_column=Column(String(200), nullable=False))
    status: str = SQLField(sa_column=Column(String(20), nullable=False))
    labels: dict[str, str] = SQLField(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    annotations: dict[str, str] = SQLField(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    starts_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    ends_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    generator_url: str | None = SQLField(default=None, sa_column=Column(String(2048), nullable=True))
    first_received_at: datetime = SQLField(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    last_received_at: datetime = SQLField(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    receive_count: int = SQLField(default=1, sa_column=Column(Integer, nullable=False))


@dataclass(frozen=True)
class ReceivedAlert:
    """One alert as any of the webhooks delivers it, normalised."""

    source: str
    fingerprint: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: str | None = None
    value: str = ""  # what Grafana measured (valueString), if it says

    @property
    def name(self) -> str:
        return self.labels.get("alertname") or "alert"


@dataclass(frozen=True)
class Routed:
    """What the routing rules decided for one alert."""

    route: str | None  # the matching rule's name; None: the defaults
    drop: bool
    service: str
    severity: Severity | None  # None: the incident type's template decides (else P3)
    incident_type: str
    playbook_id: str | None


def fingerprint_of(labels: Mapping[str, str]) -> str:
    """A stable id of a label set, whatever the order of the labels."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def moment(value: datetime | None) -> datetime | None:
    """A webhook's timestamp, aware; Alertmanager's and Grafana's zero time (0001-01-01) means none."""
    if value is None or value.year < 1971:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def service_name(raw: str) -> str:
    """A label value as an incident service name (letters, digits and ._:/-, at most 100 characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9._:/-]+", "-", raw.strip())
    cleaned = re.sub(r"^[^A-Za-z0-9]+", "", cleaned)[:SERVICE_MAX]
    return cleaned or UNKNOWN_SERVICE


def first_match(rules: Sequence[tuple[int, AlertRouteCreate]], labels: Mapping[str, str]) -> AlertRouteCreate | None:
    """The first enabled rule by priority, then id, whose matchers all match."""
    for _, rule in sorted(rules, key=lambda item: (item[1].priority, item[0])):
        if rule.enabled and all(m.matches(labels) for m in rule.matchers):
            return rule
    return None


def route_alert(labels: Mapping[str, str], rules: Sequence[tuple[int, AlertRouteCreate]]) -> Routed:
    """Service, severity, type and playbook of the incident an alert opens (or drop), per the first matching rule."""
    rule = first_match(rules, labels)
    if rule is not None and rule.service:
        service = rule.service
    else:
        names: Iterable[str] = DEFAULT_SERVICE_LABELS
        if rule is not None and rule.service_label:
            names = (rule.service_label, *DEFAULT_SERVICE_LABELS)
        found = next((labels[n] for n in names if labels.get(n, "").strip()), "")
        service = service_name(found) if found else UNKNOWN_SERVICE
    mapping = {**DEFAULT_SEVERITY_MAP, **(rule.severity_map if rule else {})}
    severity = mapping.get(labels.get("severity", "").strip().lower())
    return Routed(
        route=rule.name if rule else None,
        drop=rule.drop if rule else False,
        service=service,
        severity=severity,
        incident_type=rule.incident_type if rule else DEFAULT_INCIDENT_TYPE,
        playbook_id=rule.playbook_id if rule else None,
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def labels_text(labels: Mapping[str, str], *, skip: Iterable[str] = ()) -> str:
    shown = sorted((k, v) for k, v in labels.items() if k not in set(skip))
    return ", ".join(f"{k}={v}" for k, v in shown)


def alert_title(alert: ReceivedAlert) -> str:
    """annotations.summary, else the alert's name and its other labels."""
    summary = " ".join(alert.annotations.get("summary", "").split())
    if summary:
        return _cut(summary, TITLE_MAX)
    rest = labels_text(alert.labels, skip=("alertname",))
    return _cut(f"{alert.name} ({rest})" if rest else alert.name, TITLE_MAX)


def alert_description(alert: ReceivedAlert) -> str:
    """What the alert says (description, runbook, source link) and its labels, as text."""
    parts = [alert.annotations.get("description", "").strip()]
    if alert.annotations.get("runbook_url"):
        parts.append(f"Runbook: {alert.annotations['runbook_url']}")
    if alert.generator_url:
        parts.append(f"Source: {alert.generator_url}")
    parts.append("Labels:\n" + "\n".join(f"  {k}={v}" for k, v in sorted(alert.labels.items())))
    return _cut("\n\n".join(p for p in parts if p), DESCRIPTION_MAX)


def firing_message(alert: ReceivedAlert, *, again: bool) -> str:
    """The conversation message agents read when an alert fires: everything it carries."""
    since = f" since {alert.starts_at.isoformat()}" if alert.starts_at else ""
    lines = [f"alert {alert.name} {'firing again' if again else 'firing'}{since} ({alert.source}, {alert.fingerprint})"]
    lines.append("labels:")
    lines += [f"  {k}={v}" for k, v in sorted(alert.labels.items())]
    if alert.annotations:
        lines.append("annotations:")
        lines += [f"  {k}: {v}" for k, v in sorted(alert.annotations.items())]
    if alert.value:
        lines.append(f"values: {alert.value}")
    if alert.generator_url:
        lines.append(f"source: {alert.generator_url}")
    return "\n".join(lines)


def resolved_message(alert: ReceivedAlert, at: datetime) -> str:
    return f"alert {alert.name} resolved at {at.isoformat()} ({alert.source}, {alert.fingerprint})"
