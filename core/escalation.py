"""Escalation policies: what happens, and when, while an incident's run waits for a person (a step failed: the fix
did not work, its approval was rejected or expired, verification failed). Pure: the levels' model and checks.

A policy is a list of levels on an incident type's template (`PUT /api/incident-templates/{type}`), pinned into
each run at its start. The run's durable timers fire each level `after_seconds` after it started waiting; a level
notifies channels, raises the severity (never lowers it) and assigns a team. A person acknowledging the incident,
or the run moving on (retry, abort, resolution), stops what is left.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.tables import Severity

Channel = Literal["slack", "email", "webhook"]
MAX_LEVELS = 10
SEVERITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}  # P1 is the most severe


class EscalationLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_seconds: float = Field(gt=0, le=7 * 86_400)  # after the run started waiting for a person
    notify: list[Channel] = Field(default_factory=list, max_length=3)
    severity: Severity | None = None  # raise the incident to this (a level never lowers it)
    team: str | None = Field(default=None, min_length=1, max_length=100)  # assign the incident to this team

    @model_validator(mode="after")
    def _does_something(self) -> EscalationLevel:
        if not (self.notify or self.severity or self.team):
            raise ValueError("a level must notify, raise the severity or assign a team")
        if len(set(self.notify)) != len(self.notify):
            raise ValueError("a channel is listed twice")
        return self


def check_levels(levels: list[EscalationLevel]) -> list[EscalationLevel]:
    """Levels in the order they fire: each later than the one before."""
    if len(levels) > MAX_LEVELS:
        raise ValueError(f"at most {MAX_LEVELS} levels")
    for before, after in zip(levels, levels[1:], strict=False):
        if after.after_seconds <= before.after_seconds:
            raise ValueError("each level's after_seconds must be later than the one before")
    return levels


def raised(current: str, to: str | None) -> str:
    """The severity after a level: `to` when it is more severe than `current`, else `current`."""
    if to is None or SEVERITY_RANK.get(to, 9) >= SEVERITY_RANK.get(current, 9):
        return current
    return to
