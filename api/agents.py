"""The agents this installation provides: built-in ones and those added by installed packages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from activities.registry import agent_specs
from api.auth import require

router = APIRouter(prefix="/api/agents", tags=["agents"], dependencies=[require("viewer")])


@router.get("")
def list_agents() -> list[dict[str, Any]]:
    """Every agent a playbook step can name: what it does, its params' JSON schema, its default risk."""
    return [spec.model_dump(mode="json") for _, spec in sorted(agent_specs().items())]


@router.get("/{name}")
def get_agent(name: str) -> dict[str, Any]:
    spec = agent_specs().get(name)
    if spec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent named {name!r} (GET /api/agents lists them)")
    return spec.model_dump(mode="json")
