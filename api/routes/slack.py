"""Slack interactivity: the Approve / Reject buttons of an approval request.

Slack signs every request (signing secret, `X-Slack-Signature` v0 over the raw body, `X-Slack-Request-
Timestamp` within 5 minutes); anything else is a 401. We answer at once (Slack wants 200 within 3 s), decide in
the background through the same path as the API, then replace the original message via `response_url`.
Slack's own retries (`X-Slack-Retry-Num`) are acknowledged and ignored, and a button pressed twice is one
decision: the workflow accepts only the first.

A `response_url` is called only if it is https:// on a host of SLACK_RESPONSE_HOSTS (http:// only to a listed
loopback address: a local stand-in for Slack), and then through the SSRF guard (core.outbound), without
following redirects; any other is logged and not called. The signature proves only that the request came through
our Slack app, not that the URL in it leads to Slack.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, HTTPException, Request, Response, status
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client

from api.auth import public
from core.approval_messages import ACKNOWLEDGE_ACTION, APPROVE_ACTION, REJECT_ACTION, outcome_text
from core.audit import Actor
from core.errors import DomainError
from core.identity import User
from core.outbound import OutboundPolicy, blocked_reason, guarded_async_client
from core.roles import ROLE_RANK
from core.settings import Settings
from services.approvals import ApprovalNotFound, DecisionRefused, decide
from services.incidents.lifecycle import acknowledge

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
    if payload.get("type") != "block_actions" or action_id not in (APPROVE_ACTION, REJECT_ACTION, ACKNOWLEDGE_ACTION):
        return Response(status_code=200)  # some other interaction: nothing for us to do
    if action_id == ACKNOWLEDGE_ACTION:
        engine = request.app.state.engine
        task = asyncio.create_task(_acknowledge(engine, settings, approval_id, slack_user, payload.get("response_url")))
        _background.add(task)
        task.add_done_callback(_background.discard)
        return Response(status_code=200)
    task = asyncio.create_task(
        _decide(
            request.app.state.engine,
            request.app.state.temporal,
            settings,
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
    settings: Settings,
    approval_id: int,
    decision: str,
    slack_user: dict[str, Any],
    response_url: str | None,
) -> None:
    user = await asyncio.to_thread(_linked_user, engine, slack_user)
    if user is None:
        text = f"Your Slack account ({slack_user.get('id')}) is not linked to an Agent Monitor user; nothing done."
        await _reply(settings, response_url, text, replace=False)
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
        await _reply(settings, response_url, f"Not done: {err}", replace=False)
        return
    except Exception:  # never lose the user's click silently
        log.exception("Slack decision on approval %s failed", approval_id)
        text = f"Not done: approval {approval_id} could not be decided; try the web page."
        await _reply(settings, response_url, text, replace=False)
        return
    text = outcome_text(approval_id, decided["step_id"], decided["status"], user.username)
    await _reply(settings, response_url, text, replace=True)


async def _acknowledge(
    engine: Engine, settings: Settings, incident_id: int, slack_user: dict[str, Any], response_url: str | None
) -> None:
    """An escalation's "Acknowledge" button: the linked user (a responder or above) takes the incident."""
    user = await asyncio.to_thread(_linked_user, engine, slack_user)
    if user is None or ROLE_RANK[user.role] < ROLE_RANK["responder"]:
        who = f"Your Slack account ({slack_user.get('id')})"
        text = f"{who} is not linked to an Agent Monitor responder; nothing done." if user is None else (
            f"{user.username} is a {user.role}: acknowledging takes a responder; nothing done.")  # fmt: skip
        await _reply(settings, response_url, text, replace=False)
        return
    try:
        _, first = await asyncio.to_thread(
            acknowledge, engine=engine, incident_id=incident_id, actor=Actor(user.id, user.username, "slack")
        )
    except DomainError as err:
        await _reply(settings, response_url, f"Not done: {err}", replace=False)
        return
    text = f"Incident #{incident_id}: acknowledged by {user.username}" + ("" if first else " (already acknowledged)")
    await _reply(settings, response_url, text, replace=True)


def response_url_refusal(url: httpx.URL, allowed_hosts: Sequence[str]) -> str | None:
    """Why a response_url must not be called, or None: it must be https:// to a host of allowed_hosts (SLACK_RESPONSE_
    HOSTS: "host" for the default port, "host:port" for another), or http:// to a listed loopback address.

    Takes the httpx.URL that is then requested, so the host checked is the host dialled (no second URL parser)."""
    host, port = url.host.rstrip(".").lower(), url.port  # port: None for the scheme's default
    if url.scheme not in ("https", "http") or not host:
        return "not an https:// URL"
    if url.scheme == "http" and not _is_loopback(host):
        return f"http://{host} is not https:// (http:// is only for a loopback address)"
    if url.userinfo:
        return f"the URL to {host} carries credentials"
    default_port = 443 if url.scheme == "https" else 80
    names = {host, f"{host}:{default_port}"} if port is None else {f"{host}:{port}"}
    if names.isdisjoint(allowed_hosts):
        where = host if port is None else f"{host}:{port}"
        return f"{where} is not in SLACK_RESPONSE_HOSTS ({', '.join(allowed_hosts) or 'empty'})"
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _reply(settings: Settings, response_url: str | None, text: str, replace: bool) -> None:
    """Tell Slack through the interaction's response_url, if it leads to Slack (see the module docstring)."""
    if not response_url:
        return
    try:
        url = httpx.URL(response_url)
    except (httpx.InvalidURL, TypeError):
        url = httpx.URL()
    if (refusal := response_url_refusal(url, settings.slack_response_hosts)) is not None:
        log.warning("not calling the Slack interaction's response_url: %s", refusal)
        return
    body = {"text": text, "replace_original": replace}
    if not replace:
        body["response_type"] = "ephemeral"
    try:
        async with guarded_async_client(OutboundPolicy.from_settings(settings), timeout=10) as client:
            answer = await client.post(url, json=body)  # never follows a redirect (httpx's default)
        if answer.is_error:
            log.warning("could not update the Slack message: Slack answered %s", answer.status_code)
    except httpx.HTTPError as err:  # the decision stands even if Slack cannot be told
        reason = blocked_reason(err)
        log.warning("could not update the Slack message: %s", f"refused: {reason}" if reason else err)
