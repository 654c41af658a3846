"""Playbooks: versioned DAGs of agent steps, validated with messages that name the step.

Parallel groups are steps with the same dependencies; a step with several dependencies is a join whose
`join` strategy says when it may start: `all` (default), `first_success` (cancel the rest) or
`at_least` N (cancel the rest once N succeeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from core.agents import RISK_RANK, AgentSpec, Risk
from core.approval_rules import ApproverSpec
from core.conditions import ConditionError, check
from core.errors import Invalid
from core.playbook_vars import (
    DollarTemplate,
    Scalar,
    VariableSpec,
    parse_variables,
    render_value,
    template_problems,
    variable_values,
)

STEP_ID = r"^[a-z][a-z0-9_]{0,62}$"
OnFailure = Literal["fail", "continue", "skip_dependents"]
NEW_DEFINITION = "new_definition"  # validation context of a definition being saved now (new_playbook)
DRAFT = "draft"  # validation context of a draft being previewed: unknown variables are shown, not refused


class PlaybookError(Invalid):
    """An invalid playbook; the message names the step."""


class PlaybookProblems(ValueError):
    """What the playbook-wide rules found, one by one (an import reports each on its own path)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


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
    # Who may approve this step (named users, members of named teams; admins always): wins over the playbook's.
    approvers: ApproverSpec | None = None
    timeout_seconds: float = Field(default=120.0, gt=0, le=86400)
    heartbeat_seconds: float | None = Field(default=None, gt=0, le=3600)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    on_failure: OnFailure = "fail"
    # A negative finding (ok: false) fails the step, instead of only informing the steps after it.
    fail_on_negative: bool = False
    repeat: RepeatSpec | None = None
    # Tokens of conversation history the agent receives; older messages are summarised (default: settings).
    context_budget_tokens: int | None = Field(default=None, ge=200, le=1_000_000)


RESERVED_IDS = frozenset({"export", "import", "preview"})


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    version: int = Field(default=1, ge=0)  # 0: the built-in default
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    incident_type: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    # name: value (the shorthand: a string, number or boolean) or name: {type, default, description}.
    variables: dict[str, Scalar | VariableSpec] = Field(default_factory=dict)
    # Placeholders: 1 `${…}` only (definitions and runs from before `{{…}}`: a missing key reads as 1, so a run
    # replays as it ran); 2 `{{…}}` and `${…}` (what new_playbook gives a new save).
    syntax: Literal[1, 2] = 1
    parallel: bool = True
    # Who may approve its steps that need approval and name nobody themselves; empty: the approval policy's.
    approvers: ApproverSpec | None = None
    steps: list[StepSpec] = Field(min_length=1, max_length=200)

    @field_validator("id")
    @classmethod
    def _not_a_route(cls, value: str, info: ValidationInfo) -> str:
        # New ones only: /api/playbooks/export, /import and /preview are routes, not playbooks.
        if info.context and info.context.get(NEW_DEFINITION) and value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved (a route of /api/playbooks); pick another id")
        return value

    @model_validator(mode="before")
    @classmethod
    def _new_syntax(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get(NEW_DEFINITION) and isinstance(data, Mapping) and "syntax" not in data:
            return {**data, "syntax": 2}
        return data

    @field_validator("variables", mode="before")
    @classmethod
    def _variables(cls, value: Any) -> dict[str, Any]:
        return parse_variables(value)

    @model_validator(mode="after")
    def _structure(self, info: ValidationInfo) -> Playbook:
        drafting = bool(info.context and info.context.get(DRAFT))  # a preview shows unknown variables instead
        problems = structure_problems(self) + ([] if drafting else template_problems(self))
        if problems:
            raise PlaybookProblems(problems)
        return self

    def variable_values(self) -> dict[str, Any]:
        """Each variable's value (the shorthand's, or the declared default): for a playbook of shorthand strings,
        exactly `variables` (what `${…}` and a `when` condition's `vars` always read)."""
        return variable_values(self.variables)

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


def substitute(value: Any, variables: Mapping[str, Any], syntax: int = 1) -> Any:
    """Fill in placeholders in strings, recursively (core/playbook_vars.py): syntax 1 (the default, and every run
    pinned before `{{…}}` existed) only `${name}`, exactly as always; syntax 2 `{{name}}` too. Lookup only: no code,
    no filters."""
    if syntax == 1:
        return _dollar(value, variables)
    return render_value(value, variables, syntax=syntax)[0]


def _dollar(value: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return DollarTemplate(value).safe_substitute(variables)
    if isinstance(value, dict):
        return {key: _dollar(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_dollar(item, variables) for item in value]
    return value


def new_playbook(data: Mapping[str, Any]) -> Playbook:
    """A definition someone is saving now (API, editor, import): one that does not say its `syntax` gets 2, so
    `{{…}}` works. Everything else that reads a definition (stored versions, runs' pinned copies) reads a missing
    `syntax` as 1: what it always meant."""
    return Playbook.model_validate(data, context={NEW_DEFINITION: True})


def draft_playbook(data: Mapping[str, Any]) -> Playbook:
    """A definition being edited, for a preview: as new_playbook, except that `{{name}}` placeholders nobody
    defines are left for the preview to flag instead of refusing the whole draft."""
    return Playbook.model_validate(data, context={NEW_DEFINITION: True, DRAFT: True})


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
