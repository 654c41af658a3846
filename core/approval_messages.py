"""What an approval request looks like outside our pages: the Slack Block Kit message and its outcome.

Everything that came from agents, playbooks or people is escaped for Slack (`&`, `<`, `>`), so it can neither
ping (`<!channel>`) nor link (`<http://…|…>`) — it is shown as text."""

from __future__ import annotations

from typing import Any

APPROVE_ACTION = "approval_approve"
ACKNOWLEDGE_ACTION = "incident_acknowledge"  # the button of an escalation's message (activities/escalation.py)
REJECT_ACTION = "approval_reject"
TEXT_LIMIT = 2900  # a section's text may hold 3,000 characters


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def approval_blocks(approval: Any, incident_title: str, site_url: str) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) for a pending approval, with Approve / Reject buttons."""
    link = f"{site_url}/approvals/{approval.id}"
    title = slack_escape(incident_title)
    text = f"Approval needed: {slack_escape(approval.step_id)} on #{approval.incident_id} {title}"
    details = (
        f"*<{link}|Approve {slack_escape(approval.step_id)}?>* on incident #{approval.incident_id} {title}\n"
        f"*Action:* {slack_escape(approval.action)} ({slack_escape(approval.agent)})\n"
        f"*Risk:* {approval.risk}   *Impact:* {slack_escape(approval.impact or 'not stated')}\n"
        f"*Expires:* <!date^{int(approval.expires_at.timestamp())}^{{date_short_pretty}} {{time}}|"
        f"{approval.expires_at.isoformat()}>"
    )
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(details)}},
    ]
    if approval.context_summary:
        why = _clip(slack_escape(approval.context_summary), 2800)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Why:*\n```{why}```"}})
    blocks.append(
        {
            "type": "actions",
            "block_id": f"approval-{approval.id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "style": "primary",
                    "value": str(approval.id),
                    "text": {"type": "plain_text", "text": "Approve"},
                },
                {
                    "type": "button",
                    "action_id": REJECT_ACTION,
                    "style": "danger",
                    "value": str(approval.id),
                    "text": {"type": "plain_text", "text": "Reject"},
                },
            ],
        }  # fmt: skip
    )
    return text, blocks


def outcome_text(approval_id: int, step_id: str, status: str, by: str, comment: str | None = None) -> str:
    text = f"Approval {approval_id} ({slack_escape(step_id)}): *{status}* by {slack_escape(by)}"
    return text + (f": {slack_escape(comment)}" if comment else "")
