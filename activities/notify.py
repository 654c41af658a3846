"""Sending approval requests out (Slack, signed webhooks; email comes next). Each send is its own activity, retried
by Temporal with back-off, started beside the approval's timer: a channel that is down never delays expiry."""

from __future__ import annotations

import asyncio
import json
import secrets
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from standardwebhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.activity_defs import NOTIFY_APPROVAL, NotifyActivityDefs
from core.approval_messages import approval_blocks, outcome_text
from core.approval_rules import may_decide
from core.approvals import Approval, ApprovalEvent, ApprovalLink, link_hash
from core.identity import User, team_names
from core.outbound import OutboundPolicy, guarded_async_client
from core.payloads import NotifyApproval
from core.settings import Settings
from core.tables import Incident


class NotifyActivities(NotifyActivityDefs):
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    def _load(self, approval_id: int) -> tuple[Approval, str]:
        with Session(self._engine) as session:
            approval = session.get(Approval, approval_id)
            if approval is None:
                raise ApplicationError(f"approval {approval_id} does not exist", non_retryable=True)
            incident = session.get(Incident, approval.incident_id)
            session.expunge(approval)
            return approval, incident.title if incident else ""

    def _notified(self, approval_id: int, channel: str, data: dict[str, Any]) -> None:
        with Session(self._engine) as session:
            session.add(ApprovalEvent(approval_id=approval_id, kind="notified", actor="system", channel=channel,
                                      data=data))  # fmt: skip
            session.commit()

    @activity.defn(name=NOTIFY_APPROVAL)
    async def notify_approval(self, notify: NotifyApproval) -> bool:
        """Send one pending approval to one channel; False when it was decided before we got to it."""
        approval, title = await asyncio.to_thread(self._load, notify.approval_id)
        if notify.kind == "outcome":
            return await self._slack_outcome(approval) if notify.channel == "slack" else False
        if approval.status != "pending":
            return False
        if notify.channel == "slack":
            data = await self._slack(approval, title)
        elif notify.channel == "webhook":
            data = await self._webhook(approval, title)
        elif notify.channel == "email":
            data = await asyncio.to_thread(self._email, approval, title)
        else:
            raise ApplicationError(f"unknown approval channel {notify.channel!r}", non_retryable=True)
        await asyncio.to_thread(self._notified, notify.approval_id, notify.channel, data)
        return True

    async def _slack(self, approval: Approval, title: str) -> dict[str, Any]:
        # slack-sdk's synchronous client (standard library HTTP, no extra dependency), in a thread.
        settings = self._settings
        client = WebClient(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=15
        )
        text, blocks = approval_blocks(approval, title, settings.site_url)
        response = await asyncio.to_thread(
            client.chat_postMessage, channel=settings.slack_channel, text=text, blocks=blocks
        )
        return {"slack_channel": response.get("channel"), "ts": response.get("ts")}

    async def _slack_outcome(self, approval: Approval) -> bool:
        """Replace the request's Slack message (its buttons too) with how it was decided; False if none was
        posted (Slack was down until then)."""
        posted = await asyncio.to_thread(self._slack_message_of, approval.id or 0)
        if posted is None or approval.status == "pending":
            return False
        settings = self._settings
        client = WebClient(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=15
        )
        text = outcome_text(approval.id or 0, approval.step_id, approval.status, approval.decided_by or "timer",
                            approval.comment)  # fmt: skip
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        await asyncio.to_thread(client.chat_update, channel=posted["slack_channel"], ts=posted["ts"], text=text,
                                blocks=blocks)  # fmt: skip
        await asyncio.to_thread(self._notified, approval.id or 0, "slack", {"outcome": approval.status, **posted})
        return True

    def _slack_message_of(self, approval_id: int) -> dict[str, Any] | None:
        with Session(self._engine) as session:
            events = session.exec(
                select(ApprovalEvent)
                .where(ApprovalEvent.approval_id == approval_id, ApprovalEvent.kind == "notified",
                       ApprovalEvent.channel == "slack")
                .order_by(col(ApprovalEvent.id))
            ).all()  # fmt: skip
        for event in events:
            if event.data.get("ts") and event.data.get("slack_channel") and "outcome" not in event.data:
                return {"slack_channel": event.data["slack_channel"], "ts": event.data["ts"]}
        return None

    async def _webhook(self, approval: Approval, title: str) -> dict[str, Any]:
        """POST the request, signed per Standard Webhooks. The id is the same on every retry, so the receiver
        can drop duplicates; anything but a 2xx answer is an error, which Temporal retries."""
        settings = self._settings
        message_id = f"approval-{approval.id}-requested"
        sent_at = datetime.now(UTC)
        body = json.dumps(
            {
                "type": "approval.requested",
                "timestamp": sent_at.isoformat(),
                "data": {
                    **approval.model_dump(mode="json", exclude={"policy_id", "modified_params"}),
                    "incident_title": title,
                    "url": f"{settings.site_url}/approvals/{approval.id}",
                    "decide_url": f"{settings.site_url}/api/approvals/{approval.id}/decision",
                },
            }
        )
        signature = Webhook(settings.approval_webhook_secret.get_secret_value()).sign(message_id, sent_at, body)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
            "user-agent": "agent-monitor",
        }
        async with guarded_async_client(OutboundPolicy.from_settings(settings), timeout=10) as client:
            response = await client.post(settings.approval_webhook_url, content=body, headers=headers)
        if not response.is_success:
            raise RuntimeError(f"the approval webhook answered {response.status_code}")
        return {"webhook_id": message_id, "status": response.status_code}

    def _email(self, approval: Approval, title: str) -> dict[str, Any]:
        """Mail everyone who may decide (and has an address) a pair of single-use links; only their hashes are
        kept. A retry mails fresh links (the first ones may never have left)."""
        settings = self._settings
        with Session(self._engine) as session:
            people = session.exec(select(User).where(col(User.is_active), col(User.email).is_not(None))).all()
            deciders = [
                user
                for user in people
                if may_decide(approval.approvers, actor=user.username, role=user.role,
                              teams=team_names(session, user.id or 0))
            ]  # fmt: skip
            messages = []
            for user in deciders:
                links = {}
                for decision in ("approve", "reject"):
                    token = secrets.token_urlsafe(32)  # 256 bits
                    assert approval.id is not None and user.id is not None and user.email
                    link = ApprovalLink(
                        approval_id=approval.id,
                        token_hash=link_hash(token),
                        decision=decision,
                        user_id=user.id,
                        recipient=user.email,
                        expires_at=approval.expires_at,
                    )
                    session.add(link)
                    links[decision] = f"{settings.site_url}/approvals/email/{token}"
                messages.append(_approval_mail(approval, title, settings, user.email or "", links))
            session.commit()
        if messages:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=15) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls()
                if settings.smtp_username:
                    smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
                for message in messages:
                    smtp.send_message(message)
        return {"recipients": [m["To"] for m in messages]}

    def all(self) -> list[Any]:
        return [self.notify_approval]


def _approval_mail(approval: Approval, title: str, settings: Settings, to: str, links: dict[str, str]) -> EmailMessage:
    """Plain text only: nothing from agents or people can become markup in a mail client."""
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    subject = f"Approval needed: {approval.step_id} on #{approval.incident_id} {title}"
    message["Subject"] = " ".join(subject.split())[:200]
    expires = approval.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    message.set_content(
        f"Approve {approval.step_id} on incident #{approval.incident_id} {title}?\n\n"
        f"Action: {approval.action} ({approval.agent})\nRisk: {approval.risk}\n"
        f"Impact: {approval.impact or 'not stated'}\nExpires: {expires} (no decision by then rejects it)\n\n"
        f"Why:\n{approval.context_summary or '-'}\n\n"
        f"Approve: {links['approve']}\nReject:  {links['reject']}\n\n"
        f"Each link works once, until the request expires; it asks you to confirm first.\n"
        f"The request: {settings.site_url}/approvals/{approval.id}\n"
    )
    return message
