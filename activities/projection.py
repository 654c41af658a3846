"""Idempotent writes of workflow state into Postgres (the dashboard's read model), with an event each.

Every write is guarded by the workflow's sequence number, so a replayed or late write never overwrites
newer state; each accepted write adds an `events` row and NOTIFYs its id in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, Table, func, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session
from temporalio import activity

from core.db import session_scope
from core.events import incident_event, publish
from core.payloads import RecordBatchInput, RecordResult, RecordStepInput, RecordWorkflowInput
from core.redact import redact
from core.tables import Event, Incident, WorkflowRun, WorkflowStep, utcnow


def table_of(model: type) -> Table:
    return model.__table__  # type: ignore[attr-defined]


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class ProjectionActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="record_batch")
    def record_batch(self, input: RecordBatchInput) -> RecordResult:
        """Apply a batch of snapshots in one transaction: steps, then the workflow, so events read in order
        (a step finishes, then the workflow). The workflow's first row is written alone, before any step."""
        written = False
        with session_scope(self._engine) as session:
            for step in input.steps:
                written |= self._record_step(session, step)
            if input.workflow is not None:
                written |= self._record_workflow(session, input.workflow)
        return RecordResult(written=written)

    def _record_workflow(self, session: Session, input: RecordWorkflowInput) -> bool:
        """Upsert the workflow row; a write older than the stored one (lower seq) is ignored."""
        state = input.state
        values = {
            "workflow_id": state.workflow_id,
            "incident_id": state.incident_id,
            "playbook_id": state.playbook_id,
            "playbook_version": state.playbook_version,
            "status": state.status,
            "current_steps": state.current_steps,
            "changes": state.changes,
            "error": state.error,
            "seq": input.seq,
            "started_at": _ts(state.started_at),
            "finished_at": _ts(state.finished_at),
            "updated_at": utcnow(),
        }
        table = table_of(WorkflowRun)
        stmt = insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.workflow_id],
            set_={k: stmt.excluded[k] for k in values if k != "workflow_id"},
            where=table.c.seq < stmt.excluded.seq,
        )
        written = session.execute(stmt.returning(table.c.seq)).first() is not None
        if written:
            self._follow_incident(session, state.incident_id, state.workflow_id, state.status)
            publish(
                session,
                Event(
                    kind="workflow.status",
                    incident_id=state.incident_id,
                    workflow_id=state.workflow_id,
                    data={"status": state.status, "current_steps": state.current_steps, "error": state.error},
                ),
            )
        return written

    @staticmethod
    def _follow_incident(session: Session, incident_id: int, workflow_id: str, workflow_status: str) -> None:
        """The workflow's progress moves the incident: started → in_progress, completed → resolved.

        A human's choice wins: only the statuses the workflow could have left the incident in move; and
        only the incident's current run moves it (a run superseded by a reopen → restart does not)."""
        incidents = table_of(Incident)
        now = utcnow()
        if workflow_status == "in_progress":
            moved = session.execute(
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
            moved = session.execute(
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
            incident_event(
                session,
                kind="incident.status",
                incident_id=incident_id,
                actor="workflow",
                status=target,
                reason=f"workflow {workflow_status}",
            )

    def _record_step(self, session: Session, input: RecordStepInput) -> bool:
        step = input.step
        values = {
            "workflow_id": input.workflow_id,
            "step_id": step.step_id,
            "agent": step.agent,
            "position": step.position,
            "status": step.status,
            "attempt": step.attempt,
            "runs": step.runs,
            "note": step.note,
            # Agents redact their own results; this is the last line for anything else that slipped in.
            "output": redact(step.output),
            "error": redact(step.error),
            "seq": input.seq,
            "started_at": _ts(step.started_at),
            "finished_at": _ts(step.finished_at),
            "updated_at": utcnow(),
        }
        if input.input is not None:
            values["input"] = redact(input.input)
        table = table_of(WorkflowStep)
        stmt = insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(
            constraint="uq_workflow_steps_workflow_step",
            set_={k: stmt.excluded[k] for k in values if k not in ("workflow_id", "step_id")},
            where=table.c.seq < stmt.excluded.seq,
        )
        written = session.execute(stmt.returning(table.c.seq)).first() is not None
        if written:
            publish(
                session,
                Event(
                    kind="step.status",
                    incident_id=input.incident_id or None,
                    workflow_id=input.workflow_id,
                    step_id=step.step_id,
                    data={"status": step.status, "agent": step.agent, "runs": step.runs},
                ),
            )
        return written

    def all(self) -> list:
        return [self.record_batch]
