"""Playbooks: versioned DAGs of agent steps, validated with messages that name the step.

Parallel groups are steps with the same dependencies; a step with several dependencies is a join whose
`join` strategy says when it may start: `all` (default), `first_success` (cancel the rest) or
`at_least` N (cancel the rest once N succeeded).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.agents import RISK_RANK, AgentSpec, Risk
from core.conditions import ConditionError, check
from core.errors import Invalid

STEP_ID = r"^[a-z][a-z0-9_]{0,62}$"
OnFailure = Literal["fail", "continue", "skip_dependents"]


class PlaybookError(Invalid):
    """An invalid playbook; the message names the step."""


class RetrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=20)
    initial_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    backoff: float = Field(default=2.0, ge=1, le=10)
    max_interval_seconds: float = Field(default=60.0, gt=0, le=86400)


class JoinSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["all", "first_success", "at_least"] = "all"
    count: int | None = Field(default=None, ge=1, le=100)  # for at_least


class RepeatSpec(BaseModel):
    """Run again after a durable pause while the agent's finding is negative (verify)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=3, ge=1, le=20)
    interval_seconds: float = Field(default=10.0, ge=0, le=3600)
    # Positive checks in a row it takes: a service that answers once between failures has not recovered.
    passes: int = Field(default=1, ge=1, le=20)

    @model_validator(mode="after")
    def _passes_fit(self) -> RepeatSpec:
        if self.passes > self.count:
            raise ValueError(f"passes ({self.passes}) cannot be more than count ({self.count})")
        return self


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID)
    agent: str = Field(min_length=1, max_length=100)
    instructions: str = Field(default="", max_length=10_000)
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list, max_length=50)
    when: str | None = Field(default=None, max_length=2000)
    join: JoinSpec = Field(default_factory=JoinSpec)
    # Approval before the step runs: when asked, or always at risk high or critical (core/approvals.py).
    requires_approval: bool = False
    risk: Risk = "low"
    impact: str = Field(default="", max_length=2000)  # shown to the approver
    approval_timeout_seconds: float | None = Field(default=None, gt=0, le=30 * 86_400)  # default: settings
    timeout_seconds: float = Field(default=120.0, gt=0, le=86400)
    heartbeat_seconds: float | None = Field(default=None, gt=0, le=3600)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    on_failure: OnFailure = "fail"
    # A negative finding (ok: false) fails the step, instead of only informing the steps after it.
    fail_on_negative: bool = False
    repeat: RepeatSpec | None = None
    # Tokens of conversation history the agent receives; older messages are summarised (default: settings).
    context_budget_tokens: int | None = Field(default=None, ge=200, le=1_000_000)


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    version: int = Field(default=1, ge=0)  # 0: the built-in default
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    incident_type: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    variables: dict[str, str] = Field(default_factory=dict)
    parallel: bool = True
    steps: list[StepSpec] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _structure(self) -> Playbook:
        problems = structure_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


def structure_problems(playbook: Playbook) -> list[str]:  # noqa: C901 (one check per playbook rule, each naming its step)
    """Duplicate ids, unknown dependencies, cycles, bad joins and conditions — each naming the step."""
    problems: list[str] = []
    ids: set[str] = set()
    for step in playbook.steps:
        if step.id in ids:
            problems.append(f"step {step.id}: duplicate id")
        ids.add(step.id)
    for step in playbook.steps:
        for dep in step.depends_on:
            if dep not in ids:
                problems.append(f"step {step.id}: depends on unknown step {dep!r}")
            if dep == step.id:
                problems.append(f"step {step.id}: depends on itself")
        if len(set(step.depends_on)) != len(step.depends_on):
            problems.append(f"step {step.id}: a dependency is listed twice")
        if step.join.strategy == "at_least":
            if step.join.count is None:
                problems.append(f"step {step.id}: join at_least needs a count")
            elif step.join.count > len(step.depends_on):
                problems.append(
                    f"step {step.id}: join at_least {step.join.count} but only {len(step.depends_on)} dependencies"
                )
        elif step.join.count is not None:
            problems.append(f"step {step.id}: join count only applies to at_least")
        if step.join.strategy != "all" and len(step.depends_on) < 2:
            problems.append(f"step {step.id}: join {step.join.strategy} needs at least two dependencies")
        if step.when:
            try:
                check(step.when)
            except ConditionError as err:
                problems.append(f"step {step.id}: condition {err}")
    if not problems:
        cycle = find_cycle({s.id: list(s.depends_on) for s in playbook.steps})
        if cycle:
            problems.append(f"step {cycle[0]}: dependency cycle {' → '.join(cycle)}")
    return problems


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in step → dependencies, as a path that starts and ends on the same step, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def check_agents(playbook: Playbook, agents: Mapping[str, AgentSpec] | set[str]) -> None:
    """Raise PlaybookError naming each step whose agent nobody provides or whose params do not fit the agent's
    schema (given specs; a set of names checks names only)."""
    problems = []
    for step in playbook.steps:
        if step.agent not in agents:
            problems.append(f"step {step.id}: unknown agent {step.agent!r}")
        elif isinstance(agents, Mapping):
            spec = agents[step.agent]
            if problem := spec.params_problem(step.params):
                problems.append(f"step {step.id}: {problem}")
            if problem := risk_floor_problem(step, spec.default_risk):
                problems.append(problem)
    if problems:
        unknown = any("unknown agent" in p for p in problems)
        raise PlaybookError("; ".join(problems) + (f" (known: {', '.join(sorted(agents))})" if unknown else ""))


def risk_floor_problem(step: StepSpec, least: str) -> str | None:
    """Why the step's own risk is below its agent's, or None: a step may be riskier than its agent, never less."""
    if "risk" in step.model_fields_set and RISK_RANK[step.risk] < RISK_RANK[least]:
        return (
            f"step {step.id}: risk {step.risk} is below agent {step.agent}'s risk {least}; to let it run without a "
            "person's approval, an admin adds an approval policy that pre-approves it"
        )
    return None


def with_agent_defaults(playbook: Playbook, agents: Mapping[str, AgentSpec]) -> Playbook:
    """The playbook with each step at least as risky as its agent (a step that sets no risk gets its agent's)."""
    steps = [
        step.model_copy(update={"risk": agents[step.agent].default_risk})
        if step.agent in agents
        and ("risk" not in step.model_fields_set or RISK_RANK[step.risk] < RISK_RANK[agents[step.agent].default_risk])
        else step
        for step in playbook.steps
    ]
    return playbook.model_copy(update={"steps": steps})


class _Template(string.Template):
    # ${incident.service} and ${vars.region} as well as ${region}; nothing else is ever interpreted.
    braceidpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)*)"


def substitute(value: Any, variables: dict[str, str]) -> Any:
    """Replace ${name} placeholders in strings, recursively. Substitution only: no code, no filters."""
    if isinstance(value, str):
        return _Template(value).safe_substitute(variables)
    if isinstance(value, dict):
        return {key: substitute(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, variables) for item in value]
    return value


def default_playbook(
    *, verify_checks: int = 3, verify_interval_seconds: float = 10.0, verify_passes: int = 1
) -> Playbook:
    """monitor → investigate → remediate → verify."""
    return Playbook(
        id="default",
        name="Check, diagnose, remediate, verify",
        steps=[
            StepSpec(id="monitor", agent="monitor", instructions="Check the service's health."),
            StepSpec(id="investigate", agent="investigate", depends_on=["monitor"]),
            StepSpec(id="remediate", agent="remediate", depends_on=["investigate"], risk="medium"),
            StepSpec(
                id="verify",
                agent="verify",
                depends_on=["remediate"],
                fail_on_negative=True,
                repeat=RepeatSpec(
                    count=verify_checks,
                    interval_seconds=verify_interval_seconds,
                    passes=min(verify_passes, verify_checks),
                ),
            ),
        ],
    )
