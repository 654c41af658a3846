"""Escalating an incident nobody has taken (core/escalation.py): one level per activity, fired by the run's timer.

A level acts only while the incident is unacknowledged and open: it raises the severity (never lowers it),
assigns the team, records an `incident.escalated` timeline event, then tells the channels it names (Slack, email to
the team or the responders, the signed webhook). A retry does not act twice: the event is written once per run and
level, and each channel it reached is added to it, so a retry only sends to the channels still missing.

Each email is one person's: it carries an "Acknowledge incident #N" link of their own (web/pages/incident_email.py),
single-use, valid for ACK_LINK_TTL_SECONDS; only the hash of its token is stored.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from standardwebhooks import Webhook
from temporalio import activity

from core.activity_defs import ESCALATE_INCIDENT, EscalationActivityDefs
from core.approval_messages import ACKNOWLEDGE_ACTION
from core.approvals import link_hash
from core.audit import Actor, record_audit
from core.escalation import EscalationLevel, raised
from core.events import publish
from core.identity import Team, TeamMember, User
from core.outbound import OutboundPolicy, guarded_async_client
from core.payloads import EscalateInput
from core.roles import ROLE_RANK
from core.settings import Settings
from core.tables import AcknowledgeLink, Event, Incident, utcnow

ESCALATION = Actor(user_id=None, name="escalation", kind="system")


class EscalationActivities(EscalationActivityDefs):
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    @activity.defn(name=ESCALATE_INCIDENT)
    async def escalate_incident(self, input: EscalateInput) -> bool:
        level = EscalationLevel.model_validate(input.policy)
        applied = await asyncio.to_thread(self._apply, input, level)
        if applied is None:
            return False
        event_id, incident, notified = applied
        for channel in level.notify:
            if channel in notified:
                continue
            sent = await self._send(channel, input, incident)
            await asyncio.to_thread(self._notified, event_id, channel, sent)
        return True

    def _apply(self, input: EscalateInput, level: EscalationLevel) -> tuple[int, Incident, dict[str, Any]] | None:
        """The level's changes and its event, once; None when a person has it or it is over."""
        with Session(self._engine, expire_on_commit=False) as session:
            incident = session.exec(select(Incident).where(Incident.id == input.incident_id).with_for_update()).first()
            if incident is None or incident.acknowledged_at is not None or incident.status in ("resolved", "closed"):
                return None
            done = session.exec(
                select(Event).where(
                    Event.incident_id == input.incident_id,
                    Event.kind == "incident.escalated",
                    Event.workflow_id == input.workflow_id,
                    col(Event.data)["level"].as_integer() == input.level,
                )
            ).first()
            if done is not None:  # a retry: its changes stand; only channels still missing are told
                assert done.id is not None
                return done.id, incident, dict(done.data.get("notified") or {})
            before = {"severity": incident.severity, "assignee_team_id": incident.assignee_team_id}
            incident.severity = raised(incident.severity, level.severity)
            team = session.exec(select(Team).where(Team.name == level.team)).first() if level.team else None
            if team is not None:
                incident.assignee_team_id = team.id
            incident.updated_at = utcnow()
            session.add(incident)
            data = {
                "actor": ESCALATION.name,
                "level": input.level,
                "reason": input.reason,
                "severity": incident.severity,
                "previous_severity": before["severity"],
                "team": team.name if team else None,
                "missing_team": level.team if level.team and team is None else None,
                "channels": list(level.notify),
                "notified": {},
            }
            event = publish(session, Event(kind="incident.escalated", incident_id=input.incident_id,
                                           workflow_id=input.workflow_id, data=data))  # fmt: skip
            record_audit(session, actor=ESCALATION, action="incident.escalate", target_type="incident",
                         target_id=input.incident_id, before=before,
                         after={"severity": incident.severity, "assignee_team_id": incident.assignee_team_id,
                                "level": input.level})  # fmt: skip
            session.commit()
            assert event.id is not None
            return event.id, incident, {}

    def _notified(self, event_id: int, channel: str, sent: str) -> None:
        with Session(self._engine) as session:
            event = session.exec(select(Event).where(Event.id == event_id).with_for_update()).one()
            event.data = {**event.data, "notified": {**(event.data.get("notified") or {}), channel: sent}}
            session.add(event)
            session.commit()

    async def _send(self, channel: str, input: EscalateInput, incident: Incident) -> str:
        """Tell one channel; what happened, for the timeline ("sent", or why not)."""
        settings = self._settings
        if channel not in settings.approval_channels():
            return f"not configured ({channel.upper()} settings are empty)"
        url = f"{settings.site_url}/incidents/{incident.id}"
        summary = (
            f"Incident #{incident.id} {incident.title} ({incident.severity}, {incident.service}) needs a person "
            f"(escalation level {input.level}): {input.reason}."
        )
        text = f"{summary} Acknowledge it: {url}"
        if channel == "slack":
            client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                               timeout=15)  # fmt: skip
            button = {"type": "button", "action_id": ACKNOWLEDGE_ACTION, "value": str(incident.id), "style": "primary",
                      "text": {"type": "plain_text", "text": "Acknowledge"}}  # fmt: skip
            blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "plain_text", "text": text}},
                      {"type": "actions", "elements": [button]}]  # fmt: skip
            await asyncio.to_thread(client.chat_postMessage, channel=settings.slack_channel, text=text, blocks=blocks)
            return "sent"
        if channel == "email":
            mailed = await asyncio.to_thread(self._mail, input, incident, summary)
            return f"sent to {mailed}" if mailed else "nobody to mail (no addresses)"
        return await self._webhook(input, incident, url)

    def _recipients(self, session: Session, incident: Incident) -> list[User]:
        """The assigned team's members, else every responder (or above); those with an address."""
        query = select(User).where(col(User.is_active), col(User.email).is_not(None))
        if incident.assignee_team_id is not None:
            query = query.join(TeamMember, col(TeamMember.user_id) == User.id).where(
                TeamMember.team_id == incident.assignee_team_id
            )
        users = [u for u in session.exec(query).all() if u.email and ROLE_RANK[u.role] >= ROLE_RANK["responder"]]
        return sorted(users, key=lambda u: (u.email or "", u.id or 0))

    def _mail(self, input: EscalateInput, incident: Incident, summary: str) -> int:
        """One message per recipient, with an acknowledge link of their own; how many were sent. The links are
        stored (hashed) before the mail leaves; a retry mails fresh ones, as the first may never have left."""
        settings = self._settings
        expires = utcnow() + timedelta(seconds=settings.ack_link_ttl_seconds)
        messages = []
        with Session(self._engine) as session:
            for user in self._recipients(session, incident):
                assert incident.id is not None and user.id is not None and user.email
                token = secrets.token_urlsafe(32)  # 256 bits
                session.add(AcknowledgeLink(incident_id=incident.id, token_hash=link_hash(token), user_id=user.id,
                                            recipient=user.email, level=input.level, expires_at=expires))  # fmt: skip
                link = f"{settings.site_url}/incidents/email/{token}"
                messages.append(_escalation_mail(settings, incident, summary, user.email, link, expires))
            session.commit()
        if not messages:
            return 0
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=15) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            for message in messages:
                smtp.send_message(message)
        return len(messages)

    async def _webhook(self, input: EscalateInput, incident: Incident, url: str) -> str:
        """POST `incident.escalated`, signed as approval requests are (Standard Webhooks); the same id on every
        retry, so the receiver can drop duplicates."""
        settings = self._settings
        message_id = f"{input.workflow_id}-escalation-{input.level}"
        sent_at = datetime.now(UTC)
        data = {"incident_id": incident.id, "title": incident.title, "service": incident.service,
                "severity": incident.severity, "level": input.level, "reason": input.reason, "url": url}  # fmt: skip
        body = json.dumps({"type": "incident.escalated", "timestamp": sent_at.isoformat(), "data": data})
        signature = Webhook(settings.approval_webhook_secret.get_secret_value()).sign(message_id, sent_at, body)
        headers = {"content-type": "application/json", "webhook-id": message_id, "user-agent": "agent-monitor",
                   "webhook-timestamp": str(int(sent_at.timestamp())), "webhook-signature": signature}  # fmt: skip
        async with guarded_async_client(OutboundPolicy.from_settings(settings), timeout=10) as client:
            response = await client.post(settings.approval_webhook_url, content=body, headers=headers)
        if not response.is_success:
            raise RuntimeError(f"the escalation webhook answered {response.status_code}")
        return "sent"

    def all(self) -> list[Any]:
        return [self.escalate_incident]


def _escalation_mail(
    settings: Settings, incident: Incident, summary: str, to: str, link: str, expires: datetime
) -> EmailMessage:
    """Plain text only: nothing from agents or people becomes markup in a mail client."""
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = " ".join(f"Escalated: #{incident.id} {incident.title}".split())[:200]
    message.set_content(
        f"{summary}\n\n"
        f"Acknowledge incident #{incident.id}: {link}\n\n"
        f"Acknowledging says you have it and stops the escalation. The link is yours ({to}): it asks you to confirm "
        f"first, works once, until {expires.strftime('%Y-%m-%d %H:%M UTC')}.\n"
        f"The incident: {settings.site_url}/incidents/{incident.id}\n"
    )
    return message
