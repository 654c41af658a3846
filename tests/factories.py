"""Helpers that create incidents through the real API and wait on the real workflow."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlmodel import Session
from temporalio.client import Client, WorkflowFailureError

from core.audit import Actor
from core.identity import User
from core.payloads import WorkflowState
from services.identity import create_token, create_user

TEST_ACTOR = Actor(user_id=None, name="tests", kind="cli")
PASSWORD = "correct horse battery staple"  # noqa: S105


def incident_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"title": "checkout is failing", "service": "checkout", "severity": "P2"}
    payload.update(overrides)
    return payload


async def create_incident(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await api.post("/api/incidents", json=incident_payload(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def wait_for_workflow(client: Client, workflow_id: str) -> tuple[str, WorkflowState]:
    """Wait for the workflow to close; return ("completed" | "failed", its final queried state)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        await handle.result()
        outcome = "completed"
    except WorkflowFailureError:
        outcome = "failed"
    state = await handle.query("status", result_type=WorkflowState)
    return outcome, state


def make_user(engine, role: str, *, username: str | None = None, password: str = PASSWORD) -> tuple[User, str]:
    """A user of the role with a password and an API token: (user, token)."""
    with Session(engine) as session:
        user = create_user(
            session=session,
            actor=TEST_ACTOR,
            username=username or f"{role}-{uuid.uuid4().hex[:8]}",
            role=role,
            password=password,
        )
        token, _ = create_token(session=session, actor=TEST_ACTOR, user=user, name="tests")
        session.commit()
        session.refresh(user)
        session.expunge(user)
    return user, token
