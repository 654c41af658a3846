"""What a fault scenario leaves: its Outcome (timings from the fault, the cause an agent named, the action, the side
effects, and the facts its test asserts on) and the table of outcomes that the fault suite and bench/scenarios.py
print."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Outcome:
    scenario: str
    fault: str
    detected_s: float | None = None  # fault → incident opened by the monitor
    verified_s: float | None = None  # fault → the verify step passed
    cause: str | None = None  # the step output that named the cause ("step: summary"), if one did
    action: str = ""
    restarts: int = 0  # by the service's start counter, from the fault to the end
    incidents: int = 0
    status: str = ""  # the incident's, at the end
    workflow: str = ""  # completed | failed (its run ended) | halted (its run waits for a person)
    exit_code: int | None = None  # of the broken process, when the harness started it
    healthy_before_approval: bool | None = None
    notes: list[str] = field(default_factory=list)  # more side effects for the table: reopened, escalated, …
    timeline: list[str] = field(default_factory=list)  # the incident's own events (status moves, down, recovered)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # step id → status, output, approval
    facts: dict[str, Any] = field(default_factory=dict)  # what else the scenario saw, for its test (JSON)

    def record(self) -> dict[str, Any]:
        """What the test artifacts keep (step outputs without their data, which can be long)."""
        record = asdict(self)
        record["steps"] = {
            step: {"status": s["status"], "summary": (s.get("output") or {}).get("summary"), "error": s.get("error")}
            for step, s in self.steps.items()
        }
        return record


def seconds_since(at: str | None, since: float) -> float | None:
    """An ISO 8601 time as seconds after `since` (a time.time())."""
    return None if at is None else round(datetime.fromisoformat(at).timestamp() - since, 2)


COLUMNS = ("scenario", "detected s", "cause named", "action", "verified s", "side effects")


def row(outcome: Outcome) -> tuple[str, ...]:
    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    cause = f"yes — {outcome.cause}" if outcome.cause else "no"
    status = [f"incident {outcome.status}"] if outcome.status else []
    effects = ", ".join([f"{outcome.restarts} restart(s)", f"{outcome.incidents} incident(s)", *status, *outcome.notes])
    return (outcome.scenario, seconds(outcome.detected_s), cause, outcome.action, seconds(outcome.verified_s), effects)


def table(outcomes: list[Outcome], width: int = 60) -> str:
    """A plain-text table, each cell cut to `width` characters (the side effects to twice that)."""

    def cut(cell: str, limit: int) -> str:
        return cell if len(cell) <= limit else cell[: limit - 1] + "…"

    rows = [COLUMNS, *(tuple(cut(c, width * (1 + (i == 5))) for i, c in enumerate(row(o))) for o in outcomes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
