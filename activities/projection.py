"""Idempotent writes of workflow state into Postgres (the dashboard's read model), with an event each.

Every write is guarded by the workflow's sequence number, so a replayed or late write never overwrites
newer state; each accepted write adds an `events` row and NOTIFYs its id in the same transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, text, update
from sqlmodel import Session
from temporalio import activity

from core.payloads import RecordBatchInput, RecordResult, RecordStepInput, RecordWorkflowInput
from core.redact import redact
from core.tables import EVENTS_CHANNEL, Incident, utcnow


def table_of(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined]


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# One round trip per step write: the upsert (skipped when a newer snapshot is stored), its event (only if the
# upsert wrote) and the NOTIFY of the event's id. Plain SQL, built once: this runs for every agent attempt.
# The step write as common table expressions, so callers can add their own write to the same statement:
# the upsert (skipped when a newer snapshot is stored), its event (only if the upsert wrote), then
# `SELECT pg_notify(...) FROM event` announces the event's id.
STEP_WRITE_CTES = """
upserted AS (
    INSERT INTO workflow_steps AS s (workflow_id, step_id, agent, position, status, attempt, runs, note,
                                    output, error, seq, started_at, finished_at, updated_at, input)
    VALUES (:workflow_id, :step_id, :agent, :position, :status, :attempt, :runs, :note,
            CAST(:output AS jsonb), :error, :seq, :started_at, :finished_at, :now, CAST(:input AS jsonb))
    ON CONFLICT ON CONSTRAINT uq_workflow_steps_workflow_step DO UPDATE SET
        agent = EXCLUDED.agent, position = EXCLUDED.position, status = EXCLUDED.status,
        attempt = EXCLUDED.attempt, runs = EXCLUDED.runs, note = EXCLUDED.note, output = EXCLUDED.output,
        error = EXCLUDED.error, seq = EXCLUDED.seq, started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at, updated_at = EXCLUDED.updated_at,
        input = COALESCE(EXCLUDED.input, s.input)
    WHERE s.seq < EXCLUDED.seq
    RETURNING s.seq
), event AS (
    INSERT INTO events (at, kind, incident_id, workflow_id, step_id, data)
    SELECT :now, 'step.status', :incident_id, :workflow_id, :step_id, CAST(:data AS jsonb) FROM upserted
    RETURNING id
)
"""
STEP_WRITE_NOTIFY = "SELECT pg_notify(:channel, CAST(id AS text)) FROM event"
# One round trip per step write. Plain SQL, built once: this runs for every agent attempt.
_STEP_WRITE = text(f"WITH {STEP_WRITE_CTES} {STEP_WRITE_NOTIFY}")


_WORKFLOW_UPSERT = text(
    """
INSERT INTO workflows AS w (workflow_id, incident_id, playbook_id, playbook_version, status, current_steps,
                            changes, error, seq, started_at, finished_at, updated_at)
VALUES (:workflow_id, :incident_id, :playbook_id, :playbook_version, :status, CAST(:current_steps AS jsonb),
        CAST(:changes AS jsonb), :error, :seq, :started_at, :finished_at, :now)
ON CONFLICT (workflow_id) DO UPDATE SET
    incident_id = EXCLUDED.incident_id, playbook_id = EXCLUDED.playbook_id,
    playbook_version = EXCLUDED.playbook_version, status = EXCLUDED.status,
    current_steps = EXCLUDED.current_steps, changes = EXCLUDED.changes, error = EXCLUDED.error,
    seq = EXCLUDED.seq, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    updated_at = EXCLUDED.updated_at
WHERE w.seq < EXCLUDED.seq
RETURNING w.seq
"""
)
_EVENT = text(
    """
WITH event AS (
    INSERT INTO events (at, kind, incident_id, workflow_id, data)
    VALUES (:now, :kind, :incident_id, :workflow_id, CAST(:data AS jsonb))
    RETURNING id
)
SELECT pg_notify(:channel, CAST(id AS text)) FROM event
"""
)


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def step_params(input: RecordStepInput) -> dict[str, Any]:
    """The bind parameters of STEP_WRITE_CTES for one step snapshot."""
    step = input.step
    return {
        "workflow_id": input.workflow_id,
        "step_id": step.step_id,
        "agent": step.agent,
        "position": step.position,
        "status": step.status,
        "attempt": step.attempt,
        "runs": step.runs,
        "note": step.note,
        # Agents redact their own results; this is the last line for anything else that slipped in.
        "output": _json(redact(step.output)),
        "error": redact(step.error),
        "seq": input.seq,
        "started_at": _ts(step.started_at),
        "finished_at": _ts(step.finished_at),
        "now": utcnow(),
        "input": _json(redact(input.input)),
        "incident_id": input.incident_id or None,
        "data": json.dumps({"status": step.status, "agent": step.agent, "runs": step.runs}),
        "channel": EVENTS_CHANNEL,
    }


def record_step(db: Session | Connection, input: RecordStepInput) -> bool:
    """Upsert one step snapshot unless a newer one (higher seq) is stored; announce it. True when written."""
    return bool(db.execute(_STEP_WRITE, step_params(input)).all())


class ProjectionActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="record_batch")
    def record_batch(self, input: RecordBatchInput) -> RecordResult:
        """Apply a batch of snapshots in one transaction: steps, then the workflow, so events read in order
        (a step finishes, then the workflow). The workflow's first row is written alone, before any step."""
        written = False
        with self._engine.begin() as db:
            for step in input.steps:
                written |= record_step(db, step)
            if input.workflow is not None:
                written |= self._record_workflow(db, input.workflow)
        return RecordResult(written=written)

    def _record_workflow(self, db: Connection, input: RecordWorkflowInput) -> bool:
        """Upsert the workflow row; a write older than the stored one (lower seq) is ignored."""
        state = input.state
        params = {
            "workflow_id": state.workflow_id,
            "incident_id": state.incident_id,
            "playbook_id": state.playbook_id,
            "playbook_version": state.playbook_version,
            "status": state.status,
            "current_steps": json.dumps(state.current_steps),
            "changes": json.dumps(state.changes),
            "error": state.error,
            "seq": input.seq,
            "started_at": _ts(state.started_at),
            "finished_at": _ts(state.finished_at),
            "now": utcnow(),
        }
        if not db.execute(_WORKFLOW_UPSERT, params).all():
            return False
        # The incident moves first, so its event reads before the workflow's.
        self._follow_incident(db, state.incident_id, state.workflow_id, state.status)
        data = {"status": state.status, "current_steps": state.current_steps, "error": state.error}
        db.execute(
            _EVENT,
            {
                "now": params["now"],
                "kind": "workflow.status",
                "incident_id": state.incident_id,
                "workflow_id": state.workflow_id,
                "data": json.dumps(data),
                "channel": EVENTS_CHANNEL,
            },
        )
        return True

    @staticmethod
    def _follow_incident(db: Connection, incident_id: int, workflow_id: str, workflow_status: str) -> None:
        """The workflow's progress moves the incident: started → in_progress, completed → resolved.

        A human's choice wins: only the statuses the workflow could have left the incident in move; and
        only the incident's current run moves it (a run superseded by a reopen → restart does not)."""
        incidents = table_of(Incident)
        now = utcnow()
        if workflow_status == "in_progress":
            moved = db.execute(
                update(incidents)
                .where(
                    incidents.c.id == incident_id,
                    incidents.c.workflow_id == workflow_id,
                    incidents.c.status.in_(["open", "reopened"]),
                )
                .values(
                    status="in_progress",
                    updated_at=now,
                    acknowledged_at=func.coalesce(incidents.c.acknowledged_at, now),
                )
                .returning(incidents.c.id)
            ).first()
            target = "in_progress"
        elif workflow_status == "completed":
            moved = db.execute(
                update(incidents)
                .where(
                    incidents.c.id == incident_id,
                    incidents.c.workflow_id == workflow_id,
                    incidents.c.status.in_(["open", "in_progress", "reopened"]),
                )
                .values(status="resolved", resolved_at=now, updated_at=now)
                .returning(incidents.c.id)
            ).first()
            target = "resolved"
        else:
            return
        if moved is not None:
            data = {"actor": "workflow", "status": target, "reason": f"workflow {workflow_status}"}
            db.execute(
                _EVENT,
                {
                    "now": now,
                    "kind": "incident.status",
                    "incident_id": incident_id,
                    "workflow_id": None,
                    "data": json.dumps(data),
                    "channel": EVENTS_CHANNEL,
                },
            )

    def all(self) -> list:
        return [self.record_batch]
