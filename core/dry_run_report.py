"""A dry run's report from its state (pure): per step what would have happened — would run, ran read-only, skipped
and why, would ask whom or which policy would approve, error — with the params and instructions as the engine
rendered them, and the counts. Written beside the state by record_dry_run, shown by the API, the page and the CLI."""

from __future__ import annotations

from typing import Any

from core.payloads import StepState, WorkflowState

# Each step's outcome in the report, in the order the summary lists them.
OUTCOMES = ("ran_read_only", "would_run", "skipped", "error", "cancelled", "pending", "running")
APPROVALS = ("would_ask", "would_auto_approve", "would_reject")
ENDED = ("completed", "failed", "cancelled")


def approvers_text(approvers: dict[str, Any]) -> str:
    named = [*approvers.get("users", []), *(f"team {t}" for t in approvers.get("teams", []))]
    role = f"role {approvers.get('role') or 'approver'} or above"
    return ", ".join(named) if named else role


def approval_text(step: StepState) -> str | None:
    """What the gate would do, e.g. "would ask alice, team ops (risk high, timeout 3600s); …as if approved"."""
    approval = step.approval
    if approval is None:
        return None
    terms = f"risk {approval.risk}, timeout {approval.expires_at}"
    if approval.status == "would_auto_approve":
        said = f"would auto-approve by policy {approval.policy} ({terms})"
    elif approval.status == "would_reject":
        said = f"would be rejected at once: {approval.comment} ({terms})"
    else:
        by = f"; policy {approval.policy} names them" if approval.policy else ""
        said = f"would ask {approvers_text(approval.approvers)} ({terms}{by})"
    return f"{said}; the dry run continued as if approved"


def _simulated(step: StepState) -> dict[str, Any]:
    data = (step.output or {}).get("data") or {}
    found = data.get("dry_run") if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


def step_report(step: StepState) -> dict[str, Any]:
    """One step: its outcome, what it says, and what the agent got (rendered)."""
    simulated = _simulated(step)
    summary = str((step.output or {}).get("summary") or "")
    if step.status == "completed":
        outcome = "ran_read_only" if simulated.get("mode") == "read" else "would_run"
        text = summary
    elif step.status == "failed":
        outcome, text = "error", step.error or summary or "failed"
    elif step.status == "skipped":
        outcome, text = "skipped", step.note or "skipped"
    elif step.status == "cancelled":
        outcome, text = "cancelled", step.note or "cancelled"
    else:
        outcome, text = ("running" if step.status in ("running", "waiting_approval") else "pending"), ""
    report: dict[str, Any] = {
        "step_id": step.step_id,
        "agent": step.agent,
        "status": step.status,
        "outcome": outcome,
        "text": text,
        "mode": simulated.get("mode"),
        "ok": (step.output or {}).get("ok"),
        "params": simulated.get("params", step.params),
        "instructions": simulated.get("instructions", ""),
        "approval": approval_text(step),
        "approval_outcome": step.approval.status if step.approval is not None else None,
    }
    if simulated.get("repeat"):
        report["repeat"] = simulated["repeat"]
    return report


def build_report(state: WorkflowState, seq: int = 0) -> dict[str, Any]:
    steps = [step_report(s) for s in sorted(state.steps, key=lambda s: s.position)]
    counts = dict.fromkeys((*OUTCOMES, *APPROVALS), 0)
    for step in steps:
        counts[step["outcome"]] += 1
        if step["approval_outcome"] in counts:
            counts[step["approval_outcome"]] += 1
    return {
        "dry_run": True,
        "seq": seq,
        "status": state.status,
        "error": state.error,
        "summary": {k: v for k, v in counts.items() if v},
        "steps": steps,
        "changed": "nothing: a dry run never runs an agent with side effects, asks for no approval and opens no "
        "incident",
    }


def summary_items(summary: dict[str, int]) -> list[tuple[str, int]]:
    """The counts in the report's order (a jsonb column keeps no key order)."""
    order = (*OUTCOMES, *APPROVALS)
    return sorted(summary.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


def row_status(state: WorkflowState) -> str:
    """The row's status: running until the run ends, then completed, failed or cancelled."""
    return state.status if state.status in ENDED else "running"
