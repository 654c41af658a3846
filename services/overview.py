"""The overview's figures: what is open and running now (Postgres), how the monitored services stand (the Uptime
tile) and whether Temporal and workers answer."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine, func, text
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from core.settings import Settings
from core.supervision import supervised_children
from core.tables import AgentRun, Event, Incident, WorkflowRun, WorkflowStep
from core.uptime import availability
from services.approvals import approval_queue

ACTIVE_INCIDENT = ("open", "in_progress", "reopened")
ACTIVE_WORKFLOW = ("pending", "in_progress", "waiting_approval", "failed")
FEED_SIZE = 40
SHOWN_WORKFLOWS = 50
HEALTH_TIMEOUT = 2.0


def _database_figures(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        by_severity = dict(
            session.exec(
                select(Incident.severity, func.count())
                .where(col(Incident.status).in_(ACTIVE_INCIDENT))
                .group_by(Incident.severity)
            ).all()
        )
        running_agents = session.exec(
            select(func.count()).select_from(AgentRun).where(AgentRun.status == "running")
        ).one()
        active = session.exec(
            select(WorkflowRun, Incident)
            .join(Incident, col(Incident.id) == WorkflowRun.incident_id)
            .where(col(WorkflowRun.status).in_(ACTIVE_WORKFLOW), col(WorkflowRun.finished_at).is_(None))
            .order_by(col(WorkflowRun.updated_at).desc())
            .limit(SHOWN_WORKFLOWS)
        ).all()
        latest: dict[str, WorkflowStep] = {}
        running: dict[str, list[str]] = {}
        if active:
            steps = session.exec(
                select(WorkflowStep)
                .where(col(WorkflowStep.workflow_id).in_([run.workflow_id for run, _ in active]))
                .order_by(col(WorkflowStep.updated_at))
            ).all()
            for step in steps:
                if step.output is not None:
                    latest[step.workflow_id] = step  # the last agent to report, per workflow
                if step.status == "running":
                    running.setdefault(step.workflow_id, []).append(step.step_id)
        pending_approvals = approval_queue(session=session, status_filter="pending")
        uptime = uptime_figures(session)
        feed = session.exec(select(Event).order_by(col(Event.id).desc()).limit(FEED_SIZE)).all()
        titles = dict(
            session.exec(
                select(Incident.id, Incident.title).where(
                    col(Incident.id).in_({e.incident_id for e in feed if e.incident_id})
                )
            ).all()
        )
    return {
        "open_by_severity": {s: by_severity.get(s, 0) for s in ("P1", "P2", "P3", "P4")},
        "open_total": sum(by_severity.values()),
        "running_agents": running_agents,
        "active": [
            (run, incident, running.get(run.workflow_id, []), latest.get(run.workflow_id)) for run, incident in active
        ],
        "feed": feed,
        "titles": titles,
        "pending_approvals": pending_approvals,
        "uptime": uptime,
    }


# Each enabled service's status now (maintenance when a window covers it) and today's checks (the day rollup).
SERVICES_TODAY = text("""
SELECT s.name,
       CASE WHEN EXISTS (SELECT 1 FROM maintenance_windows w
                         WHERE w.starts_at <= now() AND now() < w.ends_at AND (w.service IS NULL OR w.service = s.name))
            THEN 'maintenance' ELSE coalesce(st.status, 'unknown') END AS status,
       d.checks, d.up, d.degraded, d.maintenance
FROM services s
LEFT JOIN service_states st ON st.service_id = s.id
LEFT JOIN uptime_rollups_day d ON d.service_id = s.id AND d.bucket = date_trunc('day', now(), 'UTC')
WHERE s.enabled
""")


def uptime_figures(session: Session) -> dict[str, Any]:
    """The Uptime tile: how many services are up, degraded, down, in maintenance (and not checked yet), and the
    service with the lowest availability today (UTC), with it."""
    counts = dict.fromkeys(("up", "degraded", "down", "maintenance", "unknown"), 0)
    worst: tuple[float, str] | None = None
    for name, status, checks, up, degraded, maintenance in session.execute(SERVICES_TODAY).all():
        counts[status] = counts.get(status, 0) + 1
        if checks is not None:
            today = availability(checks=checks, up=up, degraded=degraded, maintenance=maintenance)
            if today is not None and (worst is None or (today, name) < worst):
                worst = (today, name)
    return {
        "services": sum(counts.values()),
        "by_status": counts,
        "worst_today": None if worst is None else {"service": worst[1], "availability": worst[0]},
    }


async def _temporal_figures(temporal: Client, settings: Settings) -> dict[str, Any]:
    """Temporal's health and how many workers poll our task queue (a worker polls both task types)."""

    async def pollers() -> int:
        request = DescribeTaskQueueRequest(
            namespace=settings.temporal_namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        response = await temporal.workflow_service.describe_task_queue(request)
        return len({poller.identity for poller in response.pollers})

    try:
        healthy = await asyncio.wait_for(temporal.service_client.check_health(), HEALTH_TIMEOUT)
        workers = await asyncio.wait_for(pollers(), HEALTH_TIMEOUT)
    except Exception as err:  # any failure is shown as "unreachable", never a broken page
        return {
            "temporal_ok": False,
            "temporal_error": str(err).splitlines()[0][:200] if str(err) else "",
            "workers": None,
        }
    return {"temporal_ok": bool(healthy), "temporal_error": "", "workers": workers}


async def overview(*, engine: Engine, temporal: Client, settings: Settings) -> dict[str, Any]:
    """What the overview shows: open incidents by severity, running agents and workflows, pending approvals, the
    latest events, Temporal's health with how many workers poll the task queue, and — when an `agent-monitor up`
    runs on this machine's DATA_DIR — the processes it supervises (None otherwise: a scaled-out web)."""
    figures, health, processes = await asyncio.gather(
        run_in_threadpool(_database_figures, engine),
        _temporal_figures(temporal, settings),
        run_in_threadpool(supervised_children, settings.data_dir),
    )
    return {**figures, **health, "task_queue": settings.task_queue, "processes": processes}
