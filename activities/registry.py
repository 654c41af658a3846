"""Which agents exist and how each becomes a Temporal activity.

An agent class (the `Agent` protocol of core/agents.py) is constructed once per worker with `AgentDeps` and
registered as the activity named by its spec; every attempt goes through `AgentRunLog.around` (its record,
its context and its conversation messages) and has its params checked against the spec's schema first.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps, agent_result
from activities.dependencies import InvestigateDependenciesAgent
from activities.llm_agent import LLMAgent
from activities.logs import InvestigateLogsAgent
from activities.metrics import InvestigateMetricsAgent
from activities.remediate import RemediateCommandAgent, RemediateWebhookAgent
from activities.runs import AgentRunLog
from core.agents import BUILTIN_SPECS, AgentSpec, plugin_classes
from core.payloads import AgentInput, AgentResult

# Plugins written before activities/base.py import these from here.
__all__ = ["AgentDeps", "agent_activities", "agent_classes", "agent_result", "agent_specs", "known_agents"]

# Built-in agents written to the protocol (the default chain's are in activities/chain.py).
BUILTIN_CLASSES: tuple[Any, ...] = (
    InvestigateLogsAgent,
    InvestigateDependenciesAgent,
    InvestigateMetricsAgent,
    LLMAgent,
    RemediateCommandAgent,
    RemediateWebhookAgent,
)


def agent_classes() -> list[Any]:
    """Built-in agent classes, then plugins (a plugin never replaces a built-in of the same name)."""
    builtin = {cls.spec.name for cls in BUILTIN_CLASSES} | set(BUILTIN_SPECS)
    return [*BUILTIN_CLASSES, *(cls for cls in plugin_classes() if cls.spec.name not in builtin)]


def agent_specs() -> dict[str, AgentSpec]:
    """Every agent this installation provides, by name."""
    specs = dict(BUILTIN_SPECS)
    for cls in agent_classes():
        source = "builtin" if cls in BUILTIN_CLASSES else "plugin"
        specs.setdefault(cls.spec.name, cls.spec.model_copy(update={"source": source}))
    return specs


def known_agents() -> set[str]:
    return set(agent_specs())


def as_activity(agent: Any, runs: AgentRunLog) -> Any:
    """The agent as a Temporal activity named after it: params checked, every attempt recorded."""
    spec: AgentSpec = agent.spec

    async def execute(input: AgentInput) -> AgentResult:
        problem = spec.params_problem(input.params)
        if problem:  # retrying cannot fix it: the step's params must change (retry_step with params)
            raise ApplicationError(f"{spec.name}: {problem}", type="InvalidParams", non_retryable=True)
        return await runs.around(spec.name, input, lambda: agent.run(input))

    execute.__name__ = execute.__qualname__ = f"run_{spec.name}"
    return activity.defn(name=spec.name)(execute)


def agent_activities(deps: AgentDeps, runs: AgentRunLog) -> list[Any]:
    """One activity per agent class."""
    return [as_activity(cls(deps), runs) for cls in agent_classes()]
