"""activities.agent_testing, the helper plugin authors' tests run their agents with: it holds an agent to the
protocol the worker holds it to, and hands it what the worker hands it."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from activities.agent_testing import InvalidParams, check_agent, run_agent, sample_incident
from activities.base import AgentDeps, agent_result
from core.agents import AgentSpec, object_schema
from core.payloads import AgentInput, AgentResult

SPEC = AgentSpec(
    name="echo",
    capabilities=("investigation",),
    params_schema=object_schema({"word": {"type": "string"}}, required=("word",)),
)


class EchoAgent:
    spec: ClassVar[AgentSpec] = SPEC

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps

    async def run(self, input: AgentInput) -> AgentResult:
        assert self.deps.engine is None and not self.deps.http.is_closed
        assert input.context is not None
        return agent_result(
            True,
            input.params["word"],
            data={"service": input.context["incident"]["service"], "previous": input.previous_agent_output},
        )


async def test_it_runs_the_agent_with_the_worker_s_context():
    result = await run_agent(
        EchoAgent, {"word": "hi"}, incident=sample_incident(service="billing"), previous_output={"ok": True}
    )
    assert result == AgentResult(ok=True, summary="hi", data={"service": "billing", "previous": {"ok": True}})


async def test_params_are_checked_as_the_worker_checks_them():
    with pytest.raises(InvalidParams, match="echo: params: 'word' is a required property"):
        await run_agent(EchoAgent, {})


class NoSpec:
    async def run(self, input: AgentInput) -> AgentResult:
        return agent_result(True, "")


class SyncRun:
    spec: ClassVar[AgentSpec] = SPEC

    def run(self, input: AgentInput) -> AgentResult:
        return agent_result(True, "")


class DictResult(EchoAgent):
    async def run(self, input: AgentInput) -> Any:
        return {"ok": True, "summary": "a dict"}


async def test_an_agent_off_the_protocol_is_a_type_error():
    with pytest.raises(TypeError, match="NoSpec.spec must be a core.agents.AgentSpec"):
        check_agent(NoSpec)
    with pytest.raises(TypeError, match="SyncRun.run must be `async def run"):
        check_agent(SyncRun)
    with pytest.raises(TypeError, match="run must return an AgentResult .* not dict"):
        await run_agent(DictResult, {"word": "x"})
