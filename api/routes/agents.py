"""The agents this installation provides: built-in ones and those added by installed packages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from api.auth import require
from api.deps import SessionDep
from core.agents import Capability
from services.agents import all_agent_specs

router = APIRouter(prefix="/api/agents", tags=["agents"], dependencies=[require("viewer")])


@router.get("")
def list_agents(session: SessionDep, capability: Capability | None = None) -> list[dict[str, Any]]:
    """Every agent a playbook step can name (built-in, plugins, webhook agents, agents installed from the
    marketplace): what it does, its params' JSON schema, its default risk; `capability` keeps those that have it."""
    return [
        spec.model_dump(mode="json")
        for _, spec in sorted(all_agent_specs(session).items())
        if capability is None or capability in spec.capabilities
    ]


@router.get("/{name}")
def get_agent(name: str, session: SessionDep) -> dict[str, Any]:
    spec = all_agent_specs(session).get(name)
    if spec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent named {name!r} (GET /api/agents lists them)")
    return spec.model_dump(mode="json")
