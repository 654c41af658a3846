"""Scheduled monitoring's records and rules: every check's result (`uptime_metrics`), each service's running state
(`service_states`: up/down, consecutive failures and passes, the incident of its current outage) and maintenance
windows; and the pure function that moves a state on by one result (flap protection: an outage starts after
`failure_threshold` failures in a row and ends after `recovery_threshold` passes in a row).

The activities that run the checks (activities/monitoring/) and the API (api/routes/maintenance.py) use these; nothing
here touches a database or the network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from core.services import SERVICE_NAME
from core.tables import utcnow

CheckStatus = Literal["up", "down", "degraded"]
ServiceStatus = Literal["unknown", "up", "down", "degraded"]
ERROR_MAX = 500


class UptimeMetric(SQLModel, table=True):
    """One check of one service: when it was due and when it ran (their difference is the scheduler's lag)."""

    __tablename__ = "uptime_metrics"
    __table_args__ = (
        # A tick retried after a worker died writes no result twice.
        UniqueConstraint("service_id", "scheduled_at", name="uq_uptime_metrics_service_scheduled"),
        CheckConstraint("status IN ('up', 'down', 'degraded')", name="ck_uptime_metrics_status"),
        Index("ix_uptime_metrics_service_checked", "service_id", "checked_at"),
        Index("ix_uptime_metrics_checked_at", "checked_at"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    service_id: int = SQLField(
        sa_column=Column(BigInteger, ForeignKey("services.id", ondelete="CASCADE"), nullable=False)
    )
    scheduled_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    checked_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    status: str = SQLField(sa_column=Column(String(20), nullable=False))
    response_time_ms: float | None = SQLField(default=None, sa_column=Column(Float, nullable=True))
    status_code: int | None = SQLField(default=None, sa_column=Column(Integer, nullable=True))
    error: str | None = SQLField(default=None, sa_column=Column(String(ERROR_MAX), nullable=True))
    error_kind: str | None = SQLField(default=None, sa_column=Column(String(50), nullable=True))
    # The incident of the outage this result belongs to (set on its failed checks once the incident opens).
    incident_id: int | None = SQLField(
        default=None, sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=True)
    )


class UptimeRollup(SQLModel):
    """One service's checks in one UTC minute, hour or day (core/uptime.py): written by the monitor's ticks with
    the results (activities/monitoring/rollups.py), read by the uptime API instead of the raw results.

    checks = up + degraded + down + maintenance; a check due in a maintenance window (silenced, or stored) counts
    only as maintenance. Latency covers the stored non-maintenance results that have one: their sum, count, max
    and a log-scale histogram (`hist`, its array's lower bound the lowest bucket present)."""

    service_id: int = SQLField(sa_type=BigInteger, foreign_key="services.id", ondelete="CASCADE", primary_key=True)
    bucket: datetime = SQLField(sa_type=DateTime(timezone=True), primary_key=True)
    checks: int = SQLField(default=0, sa_type=Integer, nullable=False)
    up: int = SQLField(default=0, sa_type=Integer, nullable=False)
    degraded: int = SQLField(default=0, sa_type=Integer, nullable=False)
    down: int = SQLField(default=0, sa_type=Integer, nullable=False)
    maintenance: int = SQLField(default=0, sa_type=Integer, nullable=False)
    latency_sum: float = SQLField(default=0.0, sa_type=Float, nullable=False)
    latency_count: int = SQLField(default=0, sa_type=Integer, nullable=False)
    latency_max: float | None = SQLField(default=None, sa_type=Float, nullable=True)
    hist: list[int] | None = SQLField(default=None, sa_type=ARRAY(Integer), nullable=True)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=False)


class UptimeMinute(UptimeRollup, table=True):
    __tablename__ = "uptime_rollups_minute"


class UptimeHour(UptimeRollup, table=True):
    __tablename__ = "uptime_rollups_hour"


class UptimeDay(UptimeRollup, table=True):
    __tablename__ = "uptime_rollups_day"


ROLLUP_TABLES = {"minute": "uptime_rollups_minute", "hour": "uptime_rollups_hour", "day": "uptime_rollups_day"}


class ServiceState(SQLModel, table=True):
    """Where a service's monitoring stands; one row per service, written only by its monitor's ticks."""

    __tablename__ = "service_states"
    __table_args__ = (
        CheckConstraint("status IN ('unknown', 'up', 'down', 'degraded')", name="ck_service_states_status"),
        Index("ix_service_states_next_check_at", "next_check_at"),
    )

    service_id: int = SQLField(
        sa_column=Column(BigInteger, ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    )
    status: str = SQLField(default="unknown", sa_column=Column(String(20), nullable=False))
    consecutive_failures: int = SQLField(default=0, sa_column=Column(Integer, nullable=False))
    consecutive_passes: int = SQLField(default=0, sa_column=Column(Integer, nullable=False))
    # Outages so far: the n-th opens (or joins) an incident under the idempotency key service:<id>:<n>.
    episode: int = SQLField(default=0, sa_column=Column(Integer, nullable=False))
    failing_since: datetime | None = SQLField(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # The current outage's incident; None while up, or while down and its incident is not open yet.
    incident_id: int | None = SQLField(
        default=None, sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=True)
    )
    next_check_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_checked_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    last_change_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    last_error: str | None = SQLField(default=None, sa_column=Column(String(ERROR_MAX), nullable=True))


class MaintenanceWindowCreate(BaseModel):
    """A time when a service (or, with no service, every service) is not checked and opens no incident."""

    model_config = ConfigDict(extra="forbid")

    service: str | None = Field(default=None, pattern=SERVICE_NAME, description="none: every service")
    starts_at: datetime
    ends_at: datetime
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindowCreate:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a time zone (e.g. 2026-12-01T22:00:00Z)")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at - self.starts_at > timedelta(days=31):
            raise ValueError("a maintenance window may last at most 31 days")
        return self


class MaintenanceWindow(SQLModel, table=True):
    __tablename__ = "maintenance_windows"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="ck_maintenance_windows_order"),
        Index("ix_maintenance_windows_ends_at", "ends_at"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    service: str | None = SQLField(default=None, sa_column=Column(String(100), nullable=True))
    starts_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    ends_at: datetime = SQLField(sa_column=Column(DateTime(timezone=True), nullable=False))
    reason: str = SQLField(default="", sa_column=Column(String(500), nullable=False))
    created_by: str = SQLField(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


@dataclass(frozen=True)
class Thresholds:
    failure_threshold: int = 3
    recovery_threshold: int = 1


@dataclass(frozen=True)
class Tracked:
    """The part of a ServiceState a result moves on (a plain value, so the rule is a pure function)."""

    status: str = "unknown"
    consecutive_failures: int = 0
    consecutive_passes: int = 0
    episode: int = 0
    failing_since: datetime | None = None
    incident_id: int | None = None


Transition = Literal["outage", "recovered"] | None


def advance(state: Tracked, result: CheckStatus, at: datetime, limits: Thresholds) -> tuple[Tracked, Transition]:
    """The state after one result, and whether an outage just started or ended.

    A failure streak reaching `failure_threshold` starts an outage (the next episode, no incident yet); during one,
    passes count up and `recovery_threshold` of them in a row end it. Outside an outage a pass is `up` (or
    `degraded`: it works, but a warning such as a certificate about to expire stands) and failures below the
    threshold leave the status alone — a single blip never flips a service to down.
    """
    if result == "down":
        failures = state.consecutive_failures + 1
        since = state.failing_since or at
        if state.status != "down" and failures >= limits.failure_threshold:
            outage = replace(
                state,
                status="down",
                consecutive_failures=failures,
                consecutive_passes=0,
                episode=state.episode + 1,
                failing_since=since,
                incident_id=None,
            )
            return outage, "outage"
        return replace(state, consecutive_failures=failures, consecutive_passes=0, failing_since=since), None
    passes = state.consecutive_passes + 1
    if state.status == "down":
        if passes >= limits.recovery_threshold:
            recovered = replace(
                state, status=result, consecutive_failures=0, consecutive_passes=passes, failing_since=None,
                incident_id=None,
            )  # fmt: skip
            return recovered, "recovered"
        return replace(state, consecutive_failures=0, consecutive_passes=passes), None
    return replace(state, status=result, consecutive_failures=0, consecutive_passes=passes, failing_since=None), None


def episode_key(service_id: int, episode: int) -> str:
    """The Idempotency-Key of a service's n-th outage incident: every retry of the tick that saw it opens one. By
    the service's id, never reused: a service registered again under an old name starts at episode 1 again."""
    return f"service:{service_id}:{episode}"


def spread(service_id: int, interval_seconds: float) -> float:
    """Seconds from now of a service's first check: spread evenly over one interval by its id, so a thousand
    services registered at once are not all checked in the same second."""
    digest = hashlib.blake2b(str(service_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64 * interval_seconds


def next_due(scheduled_at: datetime, interval_seconds: float, now: datetime, service_id: int) -> datetime:
    """When the check after the one due at `scheduled_at` is due: one interval later (no drift), or — when the
    monitor fell behind by more than an interval (it was stopped) — spread over the next interval from now."""
    following = scheduled_at + timedelta(seconds=interval_seconds)
    if following >= now:
        return following
    return now + timedelta(seconds=spread(service_id, interval_seconds))
