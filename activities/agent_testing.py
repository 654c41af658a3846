"""Run an agent in a test the way Agent Monitor's worker runs it, without a worker, Temporal or Postgres.

For plugin authors (the tests `agent-monitor agents new` scaffolds use it):

    from activities.agent_testing import check_agent, run_agent

    def test_it_answers():
        result = asyncio.run(run_agent(MyAgent, params={"url": "https://example.com"}))
        assert result.ok

`run_agent` does what the worker does around an attempt (activities/registry.py): it checks the params against
the spec's schema (refused: InvalidParams, as the worker fails such a step without running it), gives the agent
the context the worker builds (core/context.py, with an empty conversation), constructs the class with
`AgentDeps` (a real httpx client, default Settings, no database unless given), runs it and sends the result
through our Temporal data converter, returning what the workflow would receive. `run_webhook_agent` does the same
for a webhook agent: the real webhook_agent activity's signed POST and its checks of the answer.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, cast

import httpx
from sqlalchemy import Engine
from temporalio.testing import ActivityEnvironment

from activities.base import AgentDeps
from activities.runs import AgentRunLog
from activities.webhook_agent import WebhookAgentActivities
from core.agents import AgentSpec, schema_problem
from core.compress import Compressed
from core.context import build_context
from core.converter import DATA_CONVERTER
from core.payloads import AgentInput, AgentResult, IncidentContext
from core.settings import Settings
from core.webhook_agents import WebhookAgent

SAMPLE_INCIDENT = IncidentContext(
    incident_id=1, title="checkout answers 503", service="checkout", severity="high", service_url=None
)


_BUDGET: int = Settings.model_fields["context_budget_tokens"].default


class InvalidParams(ValueError):
    """Params the agent's schema refuses: the worker fails such a step without running the agent."""


def sample_incident(**changes: Any) -> IncidentContext:
    """SAMPLE_INCIDENT with some fields changed (`service_url=…`, `severity=…`)."""
    return dataclasses.replace(SAMPLE_INCIDENT, **changes)


def check_agent(agent_class: Any) -> AgentSpec:
    """The class's spec, once it is sure the class keeps the agent protocol (core/agents.py); else TypeError."""
    spec = getattr(agent_class, "spec", None)
    if not isinstance(spec, AgentSpec):
        raise TypeError(f"{agent_class.__name__}.spec must be a core.agents.AgentSpec")
    problem = schema_problem(spec.params_schema)
    if problem:
        raise TypeError(f"{spec.name}: {problem}")
    if not inspect.iscoroutinefunction(getattr(agent_class, "run", None)):
        raise TypeError(f"{agent_class.__name__}.run must be `async def run(self, input: AgentInput)`")
    return spec


def sample_input(
    agent: str,
    params: dict[str, Any] | None = None,
    *,
    incident: IncidentContext | None = None,
    previous_output: dict[str, Any] | None = None,
    instructions: str = "",
    run: int = 1,
) -> AgentInput:
    """An attempt's input for step `agent` of a sample incident's workflow, with the context the worker builds."""
    incident = incident or SAMPLE_INCIDENT
    input = AgentInput(
        incident=incident,
        workflow_id=f"incident-{incident.incident_id}",
        step_id=agent,
        previous_agent_output=previous_output,
        dependency_outputs={"previous": previous_output} if previous_output is not None else {},
        params=dict(params or {}),
        instructions=instructions,
        run=run,
        agent=agent,
    )
    nothing = Compressed(messages=[], summary=None, covered_ids=[], summarizer=None, tokens=0, fallback_reason=None)
    input.context = build_context(
        input,
        attempt=1,
        incident_row=None,
        health=None,
        history=[],
        user_inputs=[],
        compressed=nothing,
        total_messages=0,
        budget=_BUDGET,
        summary_id=None,
    )
    return input


def _check_params(spec: AgentSpec, params: dict[str, Any]) -> None:
    problem = spec.params_problem(params)
    if problem:
        raise InvalidParams(f"{spec.name}: {problem}")


def _as_the_workflow_sees_it(result: Any) -> AgentResult:
    if not isinstance(result, AgentResult):
        raise TypeError(f"run must return an AgentResult (activities.base.agent_result), not {type(result).__name__}")
    converter = DATA_CONVERTER.payload_converter
    (received,) = converter.from_payloads(converter.to_payloads([result]), [AgentResult])
    return cast(AgentResult, received)


async def run_agent(
    agent_class: Any,
    params: dict[str, Any] | None = None,
    *,
    incident: IncidentContext | None = None,
    previous_output: dict[str, Any] | None = None,
    instructions: str = "",
    http: httpx.AsyncClient | None = None,
    settings: Settings | None = None,
    engine: Engine | None = None,
) -> AgentResult:
    """Run `agent_class` once on the sample incident (or `incident`) with `params`, as a worker would."""
    spec = check_agent(agent_class)
    input = sample_input(
        spec.name, params, incident=incident, previous_output=previous_output, instructions=instructions
    )
    _check_params(spec, input.params)
    async with httpx.AsyncClient() as own_http:
        deps = AgentDeps(http=http or own_http, settings=settings or Settings(), engine=engine)
        return _as_the_workflow_sees_it(await agent_class(deps).run(input))


async def run_webhook_agent(
    registration: dict[str, Any],
    *,
    url: str,
    secret: str,
    params: dict[str, Any] | None = None,
    incident: IncidentContext | None = None,
    instructions: str = "",
) -> AgentResult:
    """POST one attempt to the webhook agent at `url` as the webhook_agent activity does (signed with `secret`,
    its answer bounded and validated) and return its result. `registration` is the POST /api/agents/webhooks
    body (agent.json): its params schema is checked first."""
    fields = {key: registration[key] for key in WebhookAgent.model_fields if key in registration}
    agent = WebhookAgent(**{**fields, "url": url, "secret": secret})
    spec = agent.spec()
    input = sample_input(spec.name, params, incident=incident, instructions=instructions)
    _check_params(spec, input.params)
    async with httpx.AsyncClient() as http:
        # The activity's call needs only its HTTP client: no database, no run log.
        activities = WebhookAgentActivities(cast(Engine, None), http, cast(AgentRunLog, None))
        result = await ActivityEnvironment().run(activities._call, agent, input)
    return _as_the_workflow_sees_it(result)
