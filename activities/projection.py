"""Idempotent writes of workflow state into Postgres (the dashboard's read model), with an event each.

Every write is guarded by the workflow's sequence number, so a replayed or late write never overwrites
newer state; each accepted write adds an `events` row and NOTIFYs its id in the same transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.exc import DataError
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.activity_defs import RECORD_BATCH, ProjectionActivityDefs
from core.db import autocommit_rows
from core.payloads import POISON_WRITE, RecordBatchInput, RecordResult, RecordStepInput, RecordWorkflowInput
from core.redact import redact
from core.tables import EVENTS_CHANNEL, utcnow


def table_of(model: type) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# The step write as common table expressions, so callers can add their own write to the same statement:
# the upsert (skipped when a newer snapshot is stored), its events (only if the upsert wrote: usually one, two
# for a step that started and ended in one write), then `SELECT pg_notify(...) FROM event` announces their ids.
STEP_WRITE_CTES = """
upserted AS (
    INSERT INTO workflow_steps AS s (workflow_id, step_id, agent, position, status, attempt, runs, note,
                                    output, error, seq, started_at, finished_at, updated_at, input, params)
    VALUES (:workflow_id, :step_id, :agent, :position, :status, :attempt, :runs, :note,
            CAST(:output AS jsonb), :error, :seq, :started_at, :finished_at, :now, CAST(:input AS jsonb),
            CAST(:params AS jsonb))
    ON CONFLICT ON CONSTRAINT uq_workflow_steps_workflow_step DO UPDATE SET
        agent = EXCLUDED.agent, position = EXCLUDED.position, status = EXCLUDED.status,
        attempt = EXCLUDED.attempt, runs = EXCLUDED.runs, note = EXCLUDED.note, output = EXCLUDED.output,
        error = EXCLUDED.error, seq = EXCLUDED.seq, started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at, updated_at = EXCLUDED.updated_at,
        input = COALESCE(EXCLUDED.input, s.input),
        params = CASE WHEN CAST(:from_agent AS boolean) THEN s.params ELSE EXCLUDED.params END
    WHERE s.seq < EXCLUDED.seq
    RETURNING s.seq
), event AS (
    INSERT INTO events (at, kind, incident_id, workflow_id, step_id, data)
    SELECT :now, 'step.status', :incident_id, :workflow_id, :step_id, e.data
    FROM upserted, jsonb_array_elements(CAST(:data AS jsonb)) WITH ORDINALITY AS e(data, n)
    ORDER BY e.n
    RETURNING id
)
"""
STEP_WRITE_NOTIFY = "SELECT pg_notify(:channel, CAST(id AS text)) FROM event"
# One round trip per step write. Plain SQL, built once: this runs for every agent attempt.
_STEP_WRITE = text(f"WITH {STEP_WRITE_CTES} {STEP_WRITE_NOTIFY}")


# The workflow write in one round trip: the upsert (skipped when a newer snapshot is stored); the incident
# following the workflow (started → in_progress, completed → resolved unless an alert of it still fires) when the
# upsert wrote; then their
# events, the incident's first so it reads before the workflow's, each NOTIFYed. A human's choice wins: only
# the statuses the workflow could have left the incident in move, and only the incident's current run moves
# it (a run superseded by a reopen → restart does not).
_WORKFLOW_WRITE = text(
    """
WITH prior AS (
    SELECT jsonb_array_length(changes) AS n FROM workflows WHERE workflow_id = :workflow_id
), written AS (
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
), moved AS (
    UPDATE incidents AS i SET
        status = CAST(:incident_status AS varchar),
        updated_at = CAST(:now AS timestamptz),
        resolved_at = CASE WHEN CAST(:incident_status AS varchar) = 'resolved'
                           THEN CAST(:now AS timestamptz) ELSE i.resolved_at END
    WHERE i.id = CAST(:incident_id AS bigint) AND i.workflow_id = CAST(:workflow_id AS varchar)
      AND i.status = ANY(CAST(:incident_from AS varchar[])) AND EXISTS (SELECT 1 FROM written)
      -- An alert's incident stays open while the alert fires: its source resolves it (services/alerts.py). The
      -- lock waits for a resolved notification being recorded, and sees its row as committed.
      AND (CAST(:incident_status AS varchar) <> 'resolved' OR NOT EXISTS (
          SELECT 1 FROM incident_alerts AS a WHERE a.incident_id = i.id AND a.status = 'firing' FOR SHARE))
    RETURNING i.id
), audited AS (
    INSERT INTO audit_events (at, actor_user_id, actor, actor_kind, action, target_type, target_id, ip, user_agent,
                              after)
    SELECT a.at, a.user_id, a.actor, a.kind, a.action, 'workflow', CAST(:workflow_id AS varchar), a.ip, a.user_agent,
           a.after
    FROM jsonb_to_recordset(CAST(:audits AS jsonb)) AS a(n int, at timestamptz, user_id bigint, actor text,
                                                          kind text, action text, ip text, user_agent text, after jsonb)
    WHERE EXISTS (SELECT 1 FROM written) AND a.n > COALESCE((SELECT n FROM prior), 0)
), event AS (
    INSERT INTO events (at, kind, incident_id, workflow_id, data)
    SELECT e.at, e.kind, e.incident_id, e.workflow_id, e.data FROM (
        SELECT 1 AS n, CAST(:now AS timestamptz) AS at, 'incident.status' AS kind,
               CAST(:incident_id AS bigint) AS incident_id, CAST(NULL AS varchar) AS workflow_id,
               CAST(:incident_data AS jsonb) AS data
        FROM moved
        UNION ALL
        SELECT 2, CAST(:now AS timestamptz), 'workflow.status', CAST(:incident_id AS bigint),
               CAST(:workflow_id AS varchar), CAST(:data AS jsonb)
        FROM written
    ) AS e ORDER BY e.n
    RETURNING id
)
SELECT pg_notify(:channel, CAST(id AS text)) FROM event
"""
)
# The audit log's action for each kind of run-time change (a decision's row is its record's: not here).
CHANGE_ACTIONS = {
    "retry_step": "workflow.retry",
    "abort": "workflow.abort",
    "add_step": "workflow.add_step",
    "remove_step": "workflow.remove_step",
    "update_step_params": "workflow.update_step_params",
}
# What a workflow status does to its incident: (the incident's new status, the statuses it may move from).
_INCIDENT_FOLLOWS = {
    "in_progress": ("in_progress", ["open", "reopened"]),
    "completed": ("resolved", ["open", "in_progress", "reopened"]),
    # Aborted: nothing works on it any more, nothing fixed it: back to open, for a person (not resolved).
    "cancelled": ("open", ["in_progress"]),
}


def _json(value: object) -> str | None:
    """As JSON that Postgres takes: a NUL (which jsonb cannot hold) becomes U+FFFD, so no content can make a
    write fail for ever. The scan is of the encoded text, which is cheap; only text with a NUL is walked."""
    if value is None:
        return None
    encoded = json.dumps(value)
    return encoded if "\\u0000" not in encoded else json.dumps(_without_nul(value))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(key)): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value


def _text(value: str | None) -> str | None:
    return value if value is None or "\x00" not in value else value.replace("\x00", "\ufffd")


def step_params(input: RecordStepInput, *, started_too: bool = False) -> dict[str, Any]:
    """The bind parameters of STEP_WRITE_CTES for one step snapshot; `started_too`: the step's "running"
    event goes first, for a step whose start was not written on its own."""
    step = input.step
    statuses = ["running", step.status] if started_too and step.status != "running" else [step.status]
    return {
        "workflow_id": input.workflow_id,
        "step_id": step.step_id,
        "agent": step.agent,
        "position": step.position,
        "status": step.status,
        "attempt": step.attempt,
        "runs": step.runs,
        "note": _text(step.note),
        # Agents redact their own results; this is the last line for anything else that slipped in.
        "output": _json(redact(step.output)),
        "error": _text(redact(step.error)),
        "seq": input.seq,
        "started_at": _ts(step.started_at),
        "finished_at": _ts(step.finished_at),
        "now": utcnow(),
        "input": _json(redact(input.input)),
        "params": None if input.from_agent else _json(redact(step.params)),
        "from_agent": input.from_agent,
        "incident_id": input.incident_id or None,
        "data": json.dumps([{"status": status, "agent": step.agent, "runs": step.runs} for status in statuses]),
        "channel": EVENTS_CHANNEL,
    }


def record_step(db: Session | Connection | Engine, input: RecordStepInput) -> bool:
    """Upsert one step snapshot unless a newer one (higher seq) is stored; announce it. True when written.
    Given the engine, the statement runs on its own (autocommit)."""
    if isinstance(db, Engine):
        return bool(autocommit_rows(db, _STEP_WRITE, step_params(input)))
    return bool(db.execute(_STEP_WRITE, step_params(input)).all())


def record_workflow(db: Connection | Engine, input: RecordWorkflowInput) -> bool:
    """Upsert the workflow row and move its incident; a write older than the stored one (lower seq) is
    ignored. One statement; given the engine, it runs on its own (autocommit)."""
    if isinstance(db, Engine):
        return bool(autocommit_rows(db, _WORKFLOW_WRITE, workflow_params(input)))
    return bool(db.execute(_WORKFLOW_WRITE, workflow_params(input)).all())


def workflow_params(input: RecordWorkflowInput) -> dict[str, Any]:
    state = input.state
    changes = redact(state.changes) if state.changes else []
    incident_status, incident_from = _INCIDENT_FOLLOWS.get(state.status, (None, []))
    return {
        "workflow_id": state.workflow_id,
        "incident_id": state.incident_id,
        "playbook_id": state.playbook_id,
        "playbook_version": state.playbook_version,
        "status": state.status,
        "current_steps": _json(state.current_steps),
        "changes": _json(changes),
        "error": _text(state.error),
        "seq": input.seq,
        "started_at": _ts(state.started_at),
        "finished_at": _ts(state.finished_at),
        "now": utcnow(),
        "incident_status": incident_status,
        "incident_from": incident_from,
        "incident_data": json.dumps(
            {"actor": "workflow", "status": incident_status, "reason": f"workflow {state.status}"}
        ),
        "data": _json({"status": state.status, "current_steps": state.current_steps, "error": state.error}),
        "audits": _audits(input, changes),
        "channel": EVENTS_CHANNEL,
    }


def _audits(input: RecordWorkflowInput, changes: list[dict[str, Any]]) -> str:
    """The audit rows of the workflow's run-time changes, redacted (the statement keeps those not recorded yet:
    past the stored row's changes), each with who made it and from where."""
    if not (input.state.audits_changes and changes):
        return "[]"
    rows = []
    for index, change in enumerate(changes):
        action = CHANGE_ACTIONS.get(str(change.get("kind")))
        if action is None:
            continue
        origin = input.origins[index] if index < len(input.origins) else None
        rows.append(
            {
                "n": index + 1,
                "at": change.get("at"),
                "user_id": origin.user_id if origin else None,
                "actor": str(change.get("actor") or "unknown")[:100],
                "kind": (origin.kind if origin else "temporal")[:20],
                "action": action,
                "ip": (origin.ip or "")[:64] or None if origin else None,
                "user_agent": (origin.user_agent or "")[:300] or None if origin else None,
                "after": {key: value for key, value in change.items() if key not in ("actor", "at")},
            }
        )
    return _json(rows) or "[]"


def open_workflow(engine: Engine, opening: RecordWorkflowInput) -> bool:
    """The workflow's first row (the row its step rows refer to), on its own: idempotent (its seq)."""
    return record_workflow(engine, opening)


class ProjectionActivities(ProjectionActivityDefs):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name=RECORD_BATCH)
    def record_batch(self, input: RecordBatchInput) -> RecordResult:
        """Apply a batch of snapshots in one transaction: steps, then the workflow, so events read in order
        (a step finishes, then the workflow). The workflow's first row (`opening`), when the batch carries
        it, is written before the steps, on its own."""
        try:
            return RecordResult(written=self._apply(input))
        except (DataError, psycopg.errors.DataError) as err:  # content Postgres refuses: never succeeds
            cause = err.orig if isinstance(err, DataError) else err
            raise ApplicationError(
                f"Postgres refused the projection write: {(str(cause).splitlines() or ['?'])[0][:500]}",
                type=POISON_WRITE,
                non_retryable=True,
            ) from None

    def _apply(self, input: RecordBatchInput) -> bool:
        written = False
        if input.opening is not None:
            written = open_workflow(self._engine, input.opening)
        if not input.steps and input.workflow is None:
            return written
        if len(input.steps) + (input.workflow is not None) == 1:  # one statement: atomic on its own
            if input.workflow is not None:
                return record_workflow(self._engine, input.workflow) or written
            return record_step(self._engine, input.steps[0]) or written
        with self._engine.begin() as db:
            for step in input.steps:
                written |= record_step(db, step)
            if input.workflow is not None:
                written |= record_workflow(db, input.workflow)
        return written

    def all(self) -> list[Any]:
        return [self.record_batch]
