"""The record of approvals: the request (judged against the policies), the decision or expiry, and the
append-only audit log, each with a live event. Idempotent: a retried activity finds what it wrote."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio import activity

from activities.remediation_ledger import BUDGET_POLICY, BUDGETED_AGENTS, incident_budget
from core.activity_defs import RECORD_APPROVAL_DECISION, REQUEST_APPROVAL, ApprovalActivityDefs
from core.approval_rules import DECISION_LIMITS, ORIGIN_LIMITS, approvers_for
from core.approvals import Approval, ApprovalEvent, ApprovalPolicy, approvers_of, first_match
from core.audit import Actor, record_audit
from core.events import publish
from core.metrics import APPROVALS_REQUESTED, observe_decision
from core.payloads import ApprovalDecided, ApprovalRequest, ApprovalTicket
from core.playbook_store import pinned_approvers
from core.redact import redact
from core.settings import Settings
from core.tables import Event, utcnow


class ApprovalActivities(ApprovalActivityDefs):
    def __init__(self, engine: Engine, channels: list[str] | None = None, settings: Settings | None = None) -> None:
        self._engine = engine
        self._channels = channels or []
        self._settings = settings

    @activity.defn(name=REQUEST_APPROVAL)
    def request_approval(self, request: ApprovalRequest) -> ApprovalTicket:
        """Record the request, or find it when this is a retry; a matching auto-approve policy approves it at
        once (recorded as such). A remediation whose incident has spent its remediation budget is rejected at once:
        nobody is asked to approve what would not run."""
        with Session(self._engine) as session:
            existing = session.exec(
                select(Approval).where(
                    Approval.workflow_id == request.workflow_id,
                    Approval.step_id == request.step_id,
                    Approval.run == request.run,
                )
            ).first()
            if existing is not None:
                return _ticket(session, existing, self._channels)
            policies = list(session.exec(select(ApprovalPolicy).where(col(ApprovalPolicy.enabled))))
            policy = first_match(
                policies,
                agent=request.agent,
                incident_type=request.incident_type,
                service=request.service,
                risk=request.risk,
            )
            # A step's own approvers, else its playbook's, else the policy's (core.approval_rules.approvers_for).
            named = pinned_approvers(
                session=session,
                workflow_id=request.workflow_id,
                incident_id=request.incident_id,
                step_id=request.step_id,
            )
            now = utcnow()
            approval = Approval(
                workflow_id=request.workflow_id,
                incident_id=request.incident_id,
                step_id=request.step_id,
                run=request.run,
                agent=request.agent,
                action=request.action,
                params=redact(request.params),
                context_summary=redact(request.context_summary),
                risk=request.risk,
                impact=request.impact,
                approvers=approvers_for(approvers_of(policy), *named),
                changed_by=request.changed_by and request.changed_by[:100],
                requested_at=now,
                expires_at=datetime.fromisoformat(request.expires_at),
            )
            session.add(approval)
            session.flush()
            assert approval.id is not None
            asked = {"risk": approval.risk} | ({"changed_by": request.changed_by} if request.changed_by else {})
            _audit(session, approval, "requested", "workflow", None, asked)
            _event(session, approval, "approval.requested", {"risk": approval.risk, "expires_at": request.expires_at})
            spent = self._budget_spent(session, request)
            if spent is not None:
                approval.status, approval.decided_at, approval.channel = "rejected", now, "policy"
                approval.decided_by = f"policy:{BUDGET_POLICY}"
                approval.comment = f"{spent}; retry the step to run it anyway"
                _audit(session, approval, "auto_rejected", approval.decided_by, "policy", {"reason": spent})
                _event(session, approval, "approval.decided", {"status": "rejected", "policy": BUDGET_POLICY})
            elif policy is not None and policy.auto_approve and request.changed_by is None:
                approval.status, approval.decided_at = "approved", now
                approval.decided_by, approval.channel, approval.policy_id = f"policy:{policy.name}", "policy", policy.id
                _audit(session, approval, "auto_approved", f"policy:{policy.name}", "policy", {"policy": policy.name})
                _event(session, approval, "approval.decided", {"status": "approved", "policy": policy.name})
            session.commit()
            APPROVALS_REQUESTED.inc()
            if approval.status != "pending":  # a policy approved it, or the budget rejected it
                observe_decision(approval.status)
            return _ticket(session, approval, self._channels)

    def _budget_spent(self, session: Session, request: ApprovalRequest) -> str | None:
        if request.agent not in BUDGETED_AGENTS:
            return None
        budget = incident_budget(request.incident_id, request.run, self._settings)
        return budget.spent(session) if budget is not None else None

    @activity.defn(name=RECORD_APPROVAL_DECISION)
    def record_approval_decision(self, decided: ApprovalDecided) -> bool:
        """Move the row from pending to the workflow's decision; False when it was already recorded."""
        with Session(self._engine) as session:
            approval = session.exec(select(Approval).where(Approval.id == decided.approval_id).with_for_update()).one()
            if approval.status != "pending":
                return False
            # Values as the columns hold them, whatever sent the decision: the workflow's validator bounds an
            # Update's, but not a signal's or one an older version took; a write that fails would fail for ever.
            by, channel = _fit(decided.decided_by, 200), _fit(decided.channel, DECISION_LIMITS["channel"])
            comment = _fit(decided.comment or "", 100_000)
            params = None if decided.modified_params is None else redact(decided.modified_params)
            approval.status, approval.decided_by, approval.channel = decided.status, by, channel
            approval.decided_at = datetime.fromisoformat(decided.decided_at)
            approval.comment = comment or None
            approval.modified_params = params  # the page shows them to every viewer: secrets masked
            kind = "expired" if decided.status == "expired" else "decided"
            detail = {"status": decided.status, "comment": comment or None}
            if params is not None:
                detail["modified_params"] = params
            _audit(session, approval, kind, by, channel, detail)
            _event(session, approval, f"approval.{kind}", {"status": decided.status, "by": by})
            if decided.origin is not None:  # a person decided: the audit log's row, with the row's change
                origin = decided.origin
                ip, agent = origin.ip, origin.user_agent
                actor = Actor(
                    origin.user_id,
                    _fit(by, DECISION_LIMITS["actor"]),
                    _fit(origin.kind, ORIGIN_LIMITS["kind"]),
                    ip and _fit(ip, ORIGIN_LIMITS["ip"]),
                    agent and _fit(agent, ORIGIN_LIMITS["user_agent"]),
                )
                record_audit(
                    session,
                    actor=actor,
                    action=f"approval.{decided.status}",
                    target_type="approval",
                    target_id=approval.id,
                    after={
                        "decision": "approve" if decided.status == "approved" else "reject",
                        "comment": comment,
                        "params": params,
                        "channel": channel,
                    },
                )
            session.commit()
            observe_decision(decided.status)
            return True

    def all(self) -> list[Any]:
        return [self.request_approval, self.record_approval_decision]


def _ticket(session: Session, approval: Approval, channels: list[str]) -> ApprovalTicket:
    assert approval.id is not None
    policy = session.get(ApprovalPolicy, approval.policy_id) if approval.policy_id else None
    return ApprovalTicket(
        approval_id=approval.id,
        status=approval.status,
        approvers=approval.approvers,
        policy=policy.name if policy else None,
        channels=channels if approval.status == "pending" else [],
        decided_by=approval.decided_by if approval.status == "rejected" else None,
        comment=approval.comment if approval.status == "rejected" else None,
    )


def _fit(text: str, limit: int) -> str:
    """Text a column can hold: no NUL (Postgres refuses it), at most `limit` characters."""
    return text.replace("\x00", "\ufffd")[:limit]


def _audit(
    session: Session, approval: Approval, kind: str, actor: str, channel: str | None, data: dict[str, Any]
) -> None:
    assert approval.id is not None
    session.add(ApprovalEvent(approval_id=approval.id, kind=kind, actor=actor, channel=channel, data=data))


def _event(session: Session, approval: Approval, kind: str, data: dict[str, Any]) -> None:
    publish(
        session,
        Event(
            kind=kind,
            incident_id=approval.incident_id,
            workflow_id=approval.workflow_id,
            step_id=approval.step_id,
            data={"approval_id": approval.id, "agent": approval.agent, **data},
        ),
    )
