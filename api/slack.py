"""Slack interactivity: the Approve / Reject buttons of an approval request.

Slack signs every request (signing secret, `X-Slack-Signature` v0 over the raw body, `X-Slack-Request-
Timestamp` within 5 minutes); anything else is a 401. We answer at once (Slack wants 200 within 3 s), decide in
the background through the same path as the API, then replace the original message via `response_url`.
Slack's own retries (`X-Slack-Retry-Num`) are acknowledged and ignored, and a button pressed twice is one
decision: the workflow accepts only the first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request, Response, status
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client

from api.approval_service import ApprovalNotFound, DecisionRefused, decide
from api.auth import public
from core.approval_messages import APPROVE_ACTION, REJECT_ACTION, outcome_text
from core.audit import Actor
from core.identity import User
from core.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/slack", tags=["slack"])
MAX_BODY = 100_000
_background: set[asyncio.Task[None]] = set()  # decisions in flight (kept referenced until done)


@router.post("/interactions", dependencies=[public("Slack request signature")], status_code=200)
async def interactions(request: Request) -> Response:
    """Slack's interactivity request URL (set it in the Slack app's settings)."""
    settings: Settings = request.app.state.settings
    secret = settings.slack_signing_secret.get_secret_value()
    if not secret:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Slack is not configured (SLACK_SIGNING_SECRET)")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "request too large")
    verifier = SignatureVerifier(secret)
    try:
        valid = verifier.is_valid_request(body, dict(request.headers))
    except ValueError:  # X-Slack-Request-Timestamp is not a number
        valid = False
    if not valid:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or stale Slack signature")
    if request.headers.get("x-slack-retry-num"):
        return Response(status_code=200)  # we answered the first one; its decision is under way
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        action = payload["actions"][0]
        action_id, approval_id = action["action_id"], int(action["value"])
        slack_user = payload["user"]
    except (KeyError, IndexError, ValueError, TypeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "not a block_actions payload of ours") from None
    if payload.get("type") != "block_actions" or action_id not in (APPROVE_ACTION, REJECT_ACTION):
        return Response(status_code=200)  # some other interaction: nothing for us to do
    task = asyncio.create_task(
        _decide(
            request.app.state.engine,
            request.app.state.temporal,
            approval_id,
            "approve" if action_id == APPROVE_ACTION else "reject",
            slack_user,
            payload.get("response_url"),
        )
    )
    _background.add(task)
    task.add_done_callback(_background.discard)
    return Response(status_code=200)


def _linked_user(engine: Engine, slack_user: dict[str, Any]) -> User | None:
    """Our user for a Slack user: only the account an admin linked to that Slack id. Never by name: a
    Slack user picks their own handle (anyone in a shared channel could call themselves alice)."""
    slack_id = slack_user.get("id")
    if not isinstance(slack_id, str) or not slack_id:
        return None
    with Session(engine) as session:
        return session.exec(select(User).where(col(User.is_active), col(User.slack_user_id) == slack_id)).first()


async def _decide(
    engine: Engine,
    temporal: Client,
    approval_id: int,
    decision: str,
    slack_user: dict[str, Any],
    response_url: str | None,
) -> None:
    user = await asyncio.to_thread(_linked_user, engine, slack_user)
    if user is None:
        text = f"Your Slack account ({slack_user.get('id')}) is not linked to an Agent Monitor user; nothing done."
        await _reply(response_url, text, replace=False)
        return
    try:
        with Session(engine) as session:
            decided = await decide(
                session,
                temporal,
                approval_id,
                decision=decision,
                actor=Actor(user.id, user.username, "slack"),  # no IP: the request came from Slack's servers
                role=user.role,
                channel="slack",
            )
    except (DecisionRefused, ApprovalNotFound) as err:
        await _reply(response_url, f"Not done: {err}", replace=False)
        return
    except Exception:  # never lose the user's click silently
        log.exception("Slack decision on approval %s failed", approval_id)
        await _reply(response_url, f"Not done: approval {approval_id} could not be decided; try the web page.", False)
        return
    text = outcome_text(approval_id, decided["step_id"], decided["status"], user.username)
    await _reply(response_url, text, replace=True)


async def _reply(response_url: str | None, text: str, replace: bool) -> None:
    if not response_url:
        return
    client = WebhookClient(response_url, timeout=10)  # slack-sdk's synchronous client, in a thread
    try:
        await asyncio.to_thread(
            client.send, text=text, replace_original=replace, response_type=None if replace else "ephemeral"
        )
    except Exception as err:  # the decision stands even if Slack cannot be told
        log.warning("could not update the Slack message: %s", err)
