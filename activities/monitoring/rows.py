"""What a tick passes around: a service due for checks, one check's result, a maintenance window, an outage; and how
the monitor names itself and what it checks on incidents' timelines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from activities.checks import CheckOutcome
from core.audit import Actor
from core.monitoring import Tracked
from core.services import HttpCheck, ServiceBase

MONITOR = Actor(user_id=None, name="monitor", kind="system")


@dataclass
class Due:
    """A service this tick checks, as it stands in the tick's memory: each result moves its state and next check on."""

    service_id: int
    name: str
    config: ServiceBase
    state: Tracked
    next_check_at: datetime


@dataclass
class Result:
    due: Due
    scheduled_at: datetime
    checked_at: datetime
    status: str
    outcome: CheckOutcome | None
    error: str | None  # the check gave no outcome: it timed out, or its definition is not a valid check
    before: Tracked
    after: Tracked
    transition: str | None
    next_check_at: datetime

    @property
    def timed_out(self) -> bool:
        return self.outcome is None and (self.error or "").startswith("no answer within")

    @property
    def error_text(self) -> str | None:
        """Why the check failed (or warned), if it did."""
        return self.error or (self.outcome.error if self.outcome else None)

    @property
    def error_kind(self) -> str | None:
        """The check's own (refused, tls…), `slow` for a pass degraded by its latency, or `timeout` /
        `invalid_check` when it gave no outcome."""
        if self.outcome:
            return "slow" if (self.error or "").startswith("slow: ") else self.outcome.error_kind
        if self.error:
            return "timeout" if self.timed_out else "invalid_check"
        return None

    def outage(self) -> Outage:
        """The outage this result started (its transition is "outage")."""
        return Outage(
            self.due.service_id, self.due.name, self.due.config, self.after.episode, self.after.failing_since,
            self.error_text,
        )  # fmt: skip


@dataclass(frozen=True)
class Outage:
    """A service's outage (failure_threshold failures in a row), whose incident is to be opened, joined or
    reopened."""

    service_id: int
    name: str
    config: ServiceBase
    episode: int
    since: datetime | None
    error: str | None
    ended_incident: int | None = None  # its incident, resolved or closed while the outage went on


@dataclass(frozen=True)
class Window:
    """A maintenance window: for one service, or for all (service None)."""

    service: str | None
    starts_at: datetime
    ends_at: datetime

    def covers(self, service: str, at: datetime) -> bool:
        return (self.service is None or self.service == service) and self.starts_at <= at < self.ends_at


def in_maintenance(windows: Sequence[Window], service: str, at: datetime) -> bool:
    return any(w.covers(service, at) for w in windows)


def target(config: ServiceBase) -> str:
    """What the service's check reaches: its URL, `tcp host:port` or `dns name`."""
    check = config.check
    if isinstance(check, HttpCheck):
        return check.url
    return f"tcp {check.host}:{check.port}" if check.type == "tcp" else f"dns {check.name}"


def duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
