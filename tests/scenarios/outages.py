"""Fault scenarios about what counts as one outage and one incident: a dependency killed (its victim's incident is
linked to it, and only the dependency is restarted), a flapping service (one incident, reopened, and restarts capped
by the remediation budget), an alert re-sent five times (one incident, open while the alert fires), and a slow
service (degraded, no incident)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from functools import partial
from typing import Any

from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import EventType

from core.monitoring import UptimeMetric
from core.services import Service
from tests.scenarios import faultstate
from tests.scenarios.harness import WAIT_SECONDS, ScenarioStack, eventually
from tests.scenarios.outcome import Outcome, seconds_since
from tests.scenarios.response import (
    cause,
    conclude,
    detected,
    first_incident,
    requested,
    resolved,
    settled,
    steady,
    step_map,
    verified_s,
)

FLAP_PERIOD = 4.0  # seconds failing, then as many passing, …: each flap outlasts the monitor's two-failure threshold
SLOW_SECONDS = 0.8  # each answer of the slow service: well within its 2 s timeout
DEGRADED_MS = 400  # shop's degraded_latency_ms in the slow scenario (the default would be half the timeout)
ALERT_REPEATS = 5


async def dependency_killed(stack: ScenarioStack) -> Outcome:
    """shop-db killed: shop fails through it. Both outages open incidents, shop's `caused_by` shop-db's; shop's run
    skips its restart (its dependency is broken: the playbook's `when`), shop-db's restart is approved, and both
    runs verify once shop-db answers again."""
    shop, shop_starts = await steady(stack, "shop")
    database, starts = await steady(stack, "shop-db")
    fault_at = time.time()
    database.kill()
    outcome = Outcome("dependency killed", "SIGKILL shop-db (shop needs it)")
    cause_incident = await detected(stack, database.name, outcome, fault_at)
    victim = await first_incident(stack, shop.name)

    async def victim_restart_settled() -> dict[str, Any] | None:
        restart = step_map(await stack.workflow(victim["workflow_id"])).get("restart") or {}
        return restart if restart.get("status") in ("skipped", "waiting_approval", "running", "completed") else None

    # Approved only once shop's run has looked at its dependency (while shop-db was still down) and decided.
    restart = await eventually(victim_restart_settled, "shop's run to decide on its restart")
    assert restart["status"] == "skipped", f"shop's run did not skip its restart: {restart}"
    outcome.facts["victim_restart"] = restart
    approval = await requested(stack, cause_incident["id"])
    outcome.healthy_before_approval = await database.healthy()
    await stack.approve(approval["id"], f"{outcome.scenario}: restart of the dependency approved")
    outcome.workflow, state = await settled(stack, cause_incident["workflow_id"])
    victim_workflow, victim_state = await settled(stack, victim["workflow_id"])
    for incident_id in (cause_incident["id"], victim["id"]):
        await eventually(partial(resolved, stack, incident_id), f"incident {incident_id} to be resolved")
    await conclude(stack, database, outcome, cause_incident["id"], state, fault_at, starts, [("monitor", "refused")])
    victim_steps = step_map(victim_state)
    outcome.cause = cause(victim_steps, [("deps", database.name)]) or outcome.cause
    outcome.facts.update(
        cause_incident=cause_incident["id"],
        victim_incident=victim["id"],
        victim_workflow=victim_workflow,
        victim_status=(await stack.incident(victim["id"]))["status"],
        victim_steps={k: {"status": s["status"], "note": s.get("note")} for k, s in victim_steps.items()},
        victim_deps=(victim_steps["deps"].get("output") or {}).get("data"),
        victim_approvals=await _approvals(stack, victim["id"]),
        victim_starts=shop.starts - shop_starts,
        victim_links=(await stack.incident(victim["id"]))["links"],
        cause_links=(await stack.incident(cause_incident["id"]))["links"],
    )
    outcome.incidents += len(await stack.incidents(shop.name))
    outcome.notes += [f"shop restarted {outcome.facts['victim_starts']}×",
                      f"shop's incident {', '.join(link['kind'] for link in outcome.facts['victim_links'])} "
                      f"shop-db's"]  # fmt: skip
    return outcome


async def flapping(stack: ScenarioStack) -> Outcome:
    """shop fails for FLAP_PERIOD seconds, passes for as long, and so on, until the remediation budget stops the
    restarts: one incident, resolved by each run's verify and reopened by the monitor at the next flap (a new run
    each time), every restart approved by the approver; REMEDIATION_BUDGET restarts at most, then the run's restart
    fails and the incident stays open for a person."""
    shop, starts = await steady(stack, "shop")
    fault_at = time.time()
    await shop.fault("flap", period=FLAP_PERIOD)
    outcome = Outcome("flapping", f"/health fails {FLAP_PERIOD:g} s, passes {FLAP_PERIOD:g} s, …")
    incident = await detected(stack, shop.name, outcome, fault_at)
    approved: list[int] = []

    async def budget_spent() -> dict[str, Any] | None:
        pending = await stack.pending_approval(incident["id"])
        if pending is not None:
            await stack.approve(pending["id"], f"{outcome.scenario}: restart approved by the fault suite")
            approved.append(pending["id"])
        state = await stack.workflow((await stack.incident(incident["id"]))["workflow_id"])
        restart = step_map(state).get("restart") or {}
        return state if restart.get("status") == "failed" and "budget" in (restart.get("error") or "") else None

    budget = stack.settings.remediation_budget
    state = await eventually(budget_spent, "the remediation budget to stop the restarts", WAIT_SECONDS * 2)
    spent_at, restarts_then = time.time(), shop.starts - starts

    async def flapped_again() -> list[dict[str, Any]]:
        return [e for e in await stack.timeline(incident["id"], "incident.service_down")
                if datetime.fromisoformat(e["at"]).timestamp() >= spent_at]  # fmt: skip

    # The next flap joins the open incident; a run it started would ask for its restart within a few seconds, so
    # look FLAP_PERIOD later. (Two fixed flaps, 16 s, proved the same and cost 5-10 s more.)
    await eventually(flapped_again, "a flap after the budget was spent to reach the incident")
    await asyncio.sleep(FLAP_PERIOD)
    joined = await flapped_again()
    approvals = await _approvals(stack, incident["id"])
    refused = [a for a in approvals if a["decided_by"] == "policy:remediation-budget"]
    asked = [a["id"] for a in approvals if a["id"] not in approved and a not in refused]
    flapped_s = time.time() - fault_at
    faultstate.clear_fault(shop.state_dir, "flap")
    await eventually(lambda: stack.monitored_up(shop.name), "the monitor to see shop up once the flapping stopped")
    await conclude(stack, shop, outcome, incident["id"], state, fault_at, starts, [("monitor", r"DOWN: HTTP 5\d\d")])
    first_run = step_map(await stack.workflow(incident["workflow_id"]))
    outcome.verified_s = verified_s(first_run, fault_at)  # the first run's verify, in a passing phase
    statuses = await stack.timeline(incident["id"], "incident.status")
    reopens = [entry["data"] for entry in statuses if entry["data"].get("status") == "reopened"]
    outcome.workflow = "halted"
    window = stack.settings.remediation_budget_window_seconds
    outcome.action = (f"{outcome.restarts} restarts, each approved; restart {len(approved)} approved, then not run: "
                      f"remediation budget spent ({budget} per {window:g} s)")  # fmt: skip
    outcome.facts.update(
        approved=len(approved), reopens=reopens, flapped_s=round(flapped_s, 1), budget=budget,
        runs=(await stack.incident(incident["id"]))["workflow_id"], restarts_when_spent=restarts_then,
        joined_after_budget=joined, asked_after_budget=asked, refused_by_budget=refused,
    )  # fmt: skip
    outcome.notes += [f"reopened {len(reopens)}×", f"flapped {flapped_s:.0f} s", f"budget {budget}"]
    return outcome


async def _approvals(stack: ScenarioStack, incident_id: int) -> list[dict[str, Any]]:
    """Every approval request of the incident, whatever became of it."""
    answer = await stack.approver.get("/api/approvals", params={"incident_id": incident_id})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def alertmanager(status: str, fingerprint: str, service: str) -> dict[str, Any]:
    """Alertmanager's webhook (version 4) with one alert about the service (docs/alerts.md)."""
    labels = {"alertname": "HighLatency", "service": service, "severity": "critical"}
    alert = {
        "status": status, "labels": labels, "fingerprint": fingerprint,
        "annotations": {"summary": f"HighLatency on {service}", "description": "p99 latency above 2s for 5 minutes"},
        "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else
        "2026-12-01T10:30:00Z", "generatorURL": "http://prometheus.internal:9090/graph?g0.expr=latency",
    }  # fmt: skip
    return {
        "version": "4", "status": status, "receiver": "agent-monitor", "groupKey": '{}:{alertname="HighLatency"}',
        "groupLabels": {"alertname": "HighLatency"}, "commonLabels": labels, "commonAnnotations": {},
        "externalURL": "http://alertmanager.internal:9093", "truncatedAlerts": 0, "alerts": [alert],
    }  # fmt: skip


async def alert_repeats(stack: ScenarioStack) -> Outcome:
    """Alertmanager sends a firing HighLatency alert about shop, which answers fine from here, five times, then its
    resolution. One incident: its run completes (nothing to fix from here) but the incident stays open while the
    alert fires, repeats attach to it, and the resolved notification resolves it."""
    shop, starts = await steady(stack, "shop")
    fingerprint = uuid.uuid4().hex[:16]
    fault_at = time.time()
    outcome = Outcome(f"alert re-sent {ALERT_REPEATS}×", "Alertmanager: HighLatency firing, shop healthy here")

    async def send(status: str) -> dict[str, Any]:
        answer = await stack.admin.post("/api/alerts/alertmanager", json=alertmanager(status, fingerprint, shop.name))
        assert answer.status_code == 200, answer.text
        (handled,) = answer.json()["incidents"]
        return dict(handled)

    answers = [await send("firing")]
    incident = await stack.incident(answers[0]["incident_id"])
    outcome.detected_s = seconds_since(incident["created_at"], fault_at)
    outcome.workflow, state = await settled(stack, incident["workflow_id"])
    await asyncio.sleep(1)  # the run has completed: the incident must not be resolved while the alert fires
    while_firing = [(await stack.incident(incident["id"]))["status"]]
    for _ in range(ALERT_REPEATS - 1):
        answers.append(await send("firing"))
        await asyncio.sleep(0.5)
        while_firing.append((await stack.incident(incident["id"]))["status"])
    answers.append(await send("resolved"))
    await eventually(lambda: resolved(stack, incident["id"]), "the resolved notification to resolve the incident")
    await conclude(stack, shop, outcome, incident["id"], state, fault_at, starts, [])
    remediate = outcome.steps.get("remediate") or {}
    said = remediate.get("note") or (remediate.get("output") or {}).get("summary")
    outcome.action = f"remediate {remediate.get('status')}: {said}"
    outcome.facts.update(answers=answers, while_firing=while_firing,
                         alert_events=[e["kind"] for e in await stack.timeline(incident["id"], "alert.")])  # fmt: skip
    outcome.notes.append(f"open while firing ({', '.join(sorted(set(while_firing)))}), resolved by the alert")
    return outcome


async def slow_degraded(stack: ScenarioStack) -> Outcome:
    """shop answers every request after SLOW_SECONDS, within its timeout but above its degraded_latency_ms: the
    monitor says degraded (a pass), opens no incident, and keeps checking both services on time."""
    shop, starts = await steady(stack, "shop")
    await stack.reconfigure(shop.name, degraded_latency_ms=DEGRADED_MS)
    await eventually(lambda: stack.monitored_up(shop.name), "shop to be checked under its new registration")
    fault_at = time.time()
    await shop.fault("slow", seconds=SLOW_SECONDS)
    outcome = Outcome("slow → degraded", f"every answer after {SLOW_SECONDS:g} s (degraded above {DEGRADED_MS} ms)")

    async def degraded() -> dict[str, Any] | None:
        state = await stack.service_state(shop.name)
        return state if state["status"] == "degraded" else None

    state = await eventually(degraded, "the monitor to say shop is degraded")
    outcome.detected_s = seconds_since(state["last_change_at"], fault_at)
    seen = set()
    for _ in range(20):  # five seconds of slow answers: degraded throughout, never down
        seen.add((await stack.service_state(shop.name))["status"])
        await asyncio.sleep(0.25)
    slow_until = time.time()
    faultstate.clear_fault(shop.state_dir, "slow")
    await eventually(lambda: stack.monitored_up(shop.name), "the monitor to see shop up again")
    outcome.cause = f"monitor: {state['last_error']}"
    outcome.action = "none: a slow pass is degraded, not an outage"
    outcome.restarts = shop.starts - starts
    outcome.incidents = len(await stack.incidents(shop.name))
    lag = check_lag(stack, ["shop", "shop-db"], fault_at, slow_until)
    outcome.facts.update(state=state, seen=sorted(seen), lag=lag)
    if any(value["max_gap_s"] >= 1.5 for value in lag.values()):  # a skipped slot: when did the ticks run?
        outcome.facts["ticks"] = await tick_timeline(stack, fault_at, slow_until)
    outcome.notes += [f"status {'/'.join(sorted(seen))} while slow", "checks' lag max "
                      + ", ".join(f"{name} {value['max_lag_ms']:.0f} ms" for name, value in lag.items())]  # fmt: skip
    return outcome


TIMELINE = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "scheduled",
    EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED: "started",
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "FAILED",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "TIMED OUT",
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED: "scheduled",
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED: "started",
}


async def tick_timeline(stack: ScenarioStack, since: float, until: float) -> str:
    """The monitor workflow's events around [since, until] (seconds from `since`), to tell a stall between ticks
    (Temporal handing over) from one inside a tick (the checks' own loop)."""
    handle = stack.temporal.get_workflow_handle(stack.settings.monitor_workflow_id)
    names: dict[int, str] = {}  # activity name by its scheduled event's id
    lines = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        at = event.event_time.seconds + event.event_time.nanos / 1e9
        if event.event_type not in TIMELINE or not since - 3 <= at <= until + 3:
            continue
        what = "workflow task"
        if (kind := event.WhichOneof("attributes") or "").startswith("activity_task_"):
            attributes = getattr(event, kind)
            what = names.get(event.event_id) or names.get(attributes.scheduled_event_id, "activity")
            if kind == "activity_task_started_event_attributes" and attributes.attempt > 1:
                what += f" (attempt {attributes.attempt})"
        lines.append(f"{at - since:+.2f} {what} {TIMELINE[event.event_type]}")
    return "\n".join(lines)


def check_lag(stack: ScenarioStack, names: list[str], since: float, until: float) -> dict[str, dict[str, Any]]:
    """For each service, its checks scheduled in [since, until]: how many, their statuses, the largest lag between
    the time each was due and the time it ran, and the largest gap between two due times (a skipped slot)."""
    found = {}
    with Session(stack.engine) as session:
        for name in names:
            service_id = session.exec(select(Service.id).where(Service.name == name)).one()
            rows = list(session.exec(select(UptimeMetric).where(UptimeMetric.service_id == service_id)
                                     .order_by(col(UptimeMetric.scheduled_at))))  # fmt: skip
            rows = [r for r in rows if since <= r.scheduled_at.timestamp() <= until]
            due = [r.scheduled_at.timestamp() for r in rows]
            found[name] = {
                "checks": len(rows),
                "statuses": sorted({r.status for r in rows}),
                "max_lag_ms": max(((r.checked_at - r.scheduled_at).total_seconds() * 1000 for r in rows), default=0),
                "max_gap_s": max((b - a for a, b in zip(due, due[1:], strict=False)), default=0),
            }
    return found
