"""The agent protocol: what an agent declares (AgentSpec) and does (Agent), and which agents exist.

An agent is a class with a `spec` and `async def run(self, input: AgentInput) -> AgentResult`, constructed with
the worker's `AgentDeps` (activities/registry.py, which also answers which agents exist). Built-in agents live
in `activities/`; a pip-installed package adds its own through the `agent_monitor.agents` entry-point group,
e.g. in its pyproject.toml:

    [project.entry-points."agent_monitor.agents"]
    disk_cleanup = "acme_agents.disk:DiskCleanupAgent"

Playbooks are validated against the agents known here: a step's params against the agent's JSON schema, and a
step that does not set its risk gets the agent's default risk (so `remediate_command`, risk high, always asks a
human unless a playbook or policy says otherwise).
"""

from __future__ import annotations

import functools
import json
import logging
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, Protocol

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from core.payloads import AgentInput, AgentResult

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "agent_monitor.agents"
Capability = Literal["monitoring", "investigation", "remediation", "verification", "notification"]
Risk = Literal["low", "medium", "high", "critical"]
# How an agent takes part in a playbook's dry run (services/dry_runs.py): "read" runs it for real, so it must only
# read (logs, metrics, a health check); "describe" never runs it and says what it would do. Unknown: describe.
Simulation = Literal["read", "describe"]
RISKS: tuple[Risk, ...] = ("low", "medium", "high", "critical")
RISK_RANK: dict[str, int] = {risk: rank for rank, risk in enumerate(RISKS)}
AGENT_NAME = r"^[a-z][a-z0-9_]{0,62}$"


class AgentSpec(BaseModel):
    """What an agent says about itself: shown by GET /api/agents, checked against every playbook step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=AGENT_NAME)
    version: str = Field(default="1.0.0", min_length=1, max_length=50)
    description: str = Field(default="", max_length=2000)
    capabilities: tuple[Capability, ...] = Field(min_length=1)
    params_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    default_risk: Risk = "low"
    source: Literal["builtin", "plugin", "webhook"] = "builtin"
    # In a dry run: "read" (only reads: runs for real) or "describe" (side effects: never runs, says what it would
    # do). The safe default: an agent that says nothing is never run by a dry run.
    simulation: Simulation = "describe"

    def params_problem(self, params: dict[str, Any]) -> str | None:
        """Why `params` do not fit this agent's schema (one line naming the field), or None."""
        try:
            error = jsonschema.exceptions.best_match(_validator(self.params_schema).iter_errors(params))
        except Exception as err:  # a schema that validates but cannot be applied (a dangling $ref)
            return f"params: {self.name}'s params schema cannot be applied ({err})"
        if error is None:
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        return f"params{'.' + where if where else ''}: {error.message}"


class Agent(Protocol):
    spec: ClassVar[AgentSpec]

    async def run(self, input: AgentInput) -> AgentResult: ...


@functools.lru_cache(maxsize=256)
def _validator_for(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validator(schema: dict[str, Any]) -> Any:
    return _validator_for(json.dumps(schema, sort_keys=True))


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a JSON schema an agent can declare, or None. Only references inside the schema
    itself (`#/…`): nothing is ever fetched to validate params."""
    try:
        validator = _validator(schema)
    except jsonschema.exceptions.SchemaError as err:
        return f"params_schema is not a valid JSON schema: {err.message}"
    outside = [ref for ref in _refs(schema) if not ref.startswith("#")]
    if outside:
        return f"params_schema may only refer within itself ($ref '#/…'), not {outside[0]!r}"
    try:
        list(validator.iter_errors({}))
    except Exception as err:  # e.g. a reference to a part of the schema that does not exist
        return f"params_schema cannot be used: {err}"
    return None


def object_schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A params schema: these properties (JSON schemas), these required, nothing else."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _check_schema(check_type: str, properties: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    """The `then` of one check type: its own fields, nothing else, checked when `type` says it is that type."""
    return {
        "if": {"properties": {"type": {"const": check_type}}, "required": ["type"]},
        "then": object_schema({"type": {"const": check_type}, **properties}, required=("type", *required)),
    }


# A monitor/verify step's own check, in the shapes of a service's check (core/services.py; its patterns are
# repeated here so that this module, which workflows import, stays free of the table models).
CHECK_PARAM: dict[str, Any] = {
    "type": "object",
    "properties": {"type": {"enum": ["http", "tcp", "dns"]}},
    "required": ["type"],
    "allOf": [
        _check_schema(
            "http",
            {
                "url": {"type": "string", "pattern": r"^https?://[^\s/?#]+", "maxLength": 2048},
                "expect_status_below": {"type": "integer", "minimum": 200, "maximum": 600},
                "keyword": {"type": "string", "minLength": 1, "maxLength": 500},
                "tls_expiry_days": {"type": "integer", "minimum": 0, "maximum": 365},
            },
            ("url",),
        ),
        _check_schema(
            "tcp",
            {
                "host": {"type": "string", "pattern": r"^[A-Za-z0-9.-]{1,253}$|^\[?[0-9A-Fa-f:.]+\]?$"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            ("host", "port"),
        ),
        _check_schema(
            "dns",
            {
                "name": {"type": "string", "pattern": r"^[A-Za-z0-9.-]{1,253}$"},
                "record_type": {"enum": ["A", "AAAA"]},
                "expect": {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 100}},
            },
            ("name",),
        ),
    ],
}
# Other params stay allowed, as before checks were configurable.
CHECK_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "check": CHECK_PARAM,
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
    },
}

# The agents of the default chain and the engine's utility agents (activities/chain.py); the other built-in
# agents declare their spec on their class (activities/registry.py lists them).
BUILTIN_SPECS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in (
        AgentSpec(
            name="monitor",
            simulation="read",
            description="Runs the service's check — HTTP(S) (status, latency, body keyword, TLS certificate "
            "expiry), TCP connect or DNS resolve — from params.check, the registered service, or else a GET of "
            "the incident's service URL: up, degraded or down",
            capabilities=("monitoring",),
            params_schema=CHECK_PARAMS,
        ),
        AgentSpec(
            name="investigate",
            simulation="read",
            description="Diagnosis of what the dependencies observed",
            capabilities=("investigation",),
            params_schema={"type": "object"},
        ),
        AgentSpec(
            name="remediate",
            simulation="read",
            description="Records that no remediation is configured for the service",
            capabilities=("remediation",),
            params_schema={"type": "object"},
        ),
        AgentSpec(
            name="verify",
            simulation="read",
            description="Re-runs monitor's check (params.check, the registered service's, or the incident's "
            "service URL); negative while still down",
            capabilities=("verification",),
            params_schema=CHECK_PARAMS,
        ),
        AgentSpec(
            name="noop",
            simulation="read",
            description="Does nothing; returns ok (or params.ok) — a placeholder or a join point",
            capabilities=("notification",),
            params_schema={"type": "object", "properties": {"ok": {"type": "boolean"}, "summary": {"type": "string"}}},
        ),
        AgentSpec(
            name="sleep",
            description="Waits params.seconds, heartbeating; cancellable — a delay step",
            capabilities=("notification",),
            params_schema={
                "type": "object",
                "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
            },
        ),
    )
}
# Kept for callers that only need names and one line each.
BUILTIN_AGENTS: dict[str, str] = {name: spec.description for name, spec in BUILTIN_SPECS.items()}


@functools.cache
def plugin_classes() -> tuple[Any, ...]:
    """Agent classes installed by other packages (entry points); a broken plugin is logged and left out."""
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = point.load()
            spec = cls.spec
            if not isinstance(spec, AgentSpec) or spec.name != point.name:
                raise TypeError(f"{point.value}.spec must be an AgentSpec named {point.name!r}")
        except Exception as err:  # a plugin must not take the worker or the web down
            log.error("agent plugin %s (%s) is not loaded: %s", point.name, point.value, err)
            continue
        found.append(cls)
    return tuple(found)
