"""Sending approval requests out (Slack, signed webhooks; email comes next). Each send is its own activity, retried
by Temporal with back-off, started beside the approval's timer: a channel that is down never delays expiry."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlmodel import Session
from standardwebhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.approval_messages import approval_blocks
from core.approvals import Approval, ApprovalEvent
from core.payloads import NotifyApproval
from core.settings import Settings
from core.tables import Incident


class NotifyActivities:
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

    @activity.defn(name="notify_approval")
    async def notify_approval(self, notify: NotifyApproval) -> bool:
        """Send one pending approval to one channel; False when it was decided before we got to it."""
        approval, title = await asyncio.to_thread(self._load, notify.approval_id)
        if approval.status != "pending":
            return False
        if notify.channel == "slack":
            data = await self._slack(approval, title)
        elif notify.channel == "webhook":
            data = await self._webhook(approval, title)
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
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
            response = await client.post(settings.approval_webhook_url, content=body, headers=headers)
        if not response.is_success:
            raise RuntimeError(f"the approval webhook answered {response.status_code}")
        return {"webhook_id": message_id, "status": response.status_code}

    def all(self) -> list:
        return [self.notify_approval]
