"""Helpers that create incidents through the real API and wait on the real workflow."""

from __future__ import annotations

from typing import Any

import httpx
from temporalio.client import Client, WorkflowFailureError

from core.payloads import WorkflowState


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
