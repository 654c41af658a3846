"""Preview a playbook before it runs: every step's instructions, params and impact as a run would fill them in (for
sample variables or a past incident), the placeholders nobody fills in, the steps that would never run and why,
and the DAG to draw.

Which steps run comes from the engine's own scheduler (core.dag.plan) on a simulated run where every step that
starts succeeds and each `when` is evaluated on what the step can see then (the incident, the variables, the
earlier steps' statuses). A condition that reads an earlier step's output cannot be known before the run: the
preview says so and counts the step as running. Nothing here runs an agent or writes anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session

from core.conditions import ConditionError, evaluate
from core.dag import StepFacts, plan
from core.errors import Invalid, NotFound
from core.playbook import Playbook, StepSpec
from core.playbook_vars import INCIDENT_FIELDS, render, render_value, rendered_fields, variable_context
from core.tables import Incident
from services.agents import all_agent_specs

Outcome = Literal["runs", "skipped", "fails", "never"]
MAX_ROUNDS = 1000  # a simulated run of at most 200 steps settles in far fewer rounds


def sample_incident(playbook: Playbook) -> dict[str, Any]:
    """What a preview without a chosen incident fills `incident.*` and `service_name` with."""
    return {
        "incident_id": 0,
        "title": "Sample incident",
        "service": "sample-service",
        "severity": "P3",
        "incident_type": playbook.incident_type,
        "service_url": None,
    }


class StepPreview(BaseModel):
    id: str
    agent: str
    depends_on: list[str]
    join: str
    when: str | None
    requires_approval: bool
    risk: str
    instructions: str  # as rendered: untrusted text, escaped by whoever shows it
    params: dict[str, Any]
    impact: str
    unknown_variables: list[str] = Field(default_factory=list)  # `{{name}}` nobody defines: left as written
    not_variables: list[str] = Field(default_factory=list)  # `{{7*7}}`, `{% … %}`: not a name, left as written
    problems: list[str] = Field(default_factory=list)  # unknown agent, rendered params not fitting its schema
    outcome: Outcome = "runs"
    why: str | None = None  # why it does not run (or a note on how it runs)


class GraphNode(BaseModel):
    id: str
    agent: str
    outcome: Outcome
    requires_approval: bool
    join: str


class GraphEdge(BaseModel):
    source: str  # the dependency
    target: str


class PlaybookPreview(BaseModel):
    playbook_id: str
    version: int
    syntax: int
    incident: dict[str, Any]  # the context's incident: a past one, or the sample
    variables: dict[str, Any]  # each variable's value in this preview
    steps: list[StepPreview]
    unreachable: list[dict[str, str]]  # [{"step", "outcome", "why"}] for each step that would not run
    nodes: list[GraphNode]
    edges: list[GraphEdge]


def preview_playbook(
    *,
    session: Session,
    playbook: Playbook,
    variables: Mapping[str, Any],
    incident_id: int | None,
) -> PlaybookPreview:
    """Render and simulate the playbook for these variables (`region` or `vars.region`; `incident.severity` and
    the like change the incident's fields) on a past incident's context, or the sample's."""
    incident = _incident(session, incident_id) if incident_id is not None else sample_incident(playbook)
    overrides: dict[str, Any] = {}
    for key, value in variables.items():
        if key.startswith("incident."):
            field = key.removeprefix("incident.")
            if field not in INCIDENT_FIELDS or field == "incident_id":
                raise Invalid(f"variables.{key}: an incident has {', '.join(INCIDENT_FIELDS[1:])}")
            incident[field] = value
        else:
            overrides[key] = value
    try:
        context = variable_context(playbook, incident, overrides)
    except ValueError as err:
        raise Invalid(f"variables: {err}") from None
    values = {name: context[name] for name in playbook.variables}
    agents = all_agent_specs(session)
    steps = [_render_step(playbook, index, context, agents) for index in range(len(playbook.steps))]
    _simulate(playbook, {s.id: s for s in steps}, incident, values)
    return PlaybookPreview(
        playbook_id=playbook.id,
        version=playbook.version,
        syntax=playbook.syntax,
        incident=incident,
        variables=values,
        steps=steps,
        unreachable=[{"step": s.id, "outcome": s.outcome, "why": s.why or ""} for s in steps if s.outcome != "runs"],
        nodes=[
            GraphNode(id=s.id, agent=s.agent, outcome=s.outcome, requires_approval=s.requires_approval, join=s.join)
            for s in steps
        ],
        edges=[GraphEdge(source=dep, target=s.id) for s in playbook.steps for dep in s.depends_on],
    )


def _incident(session: Session, incident_id: int) -> dict[str, Any]:
    row = session.get(Incident, incident_id)
    if row is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return {
        "incident_id": row.id,
        "title": row.title,
        "service": row.service,
        "severity": row.severity,
        "incident_type": row.incident_type,
        "service_url": row.service_url,
    }


def _render_step(playbook: Playbook, index: int, context: Mapping[str, Any], agents: Mapping[str, Any]) -> StepPreview:
    step = playbook.steps[index]
    unknown: list[str] = []
    invalid: list[str] = []
    for _, text in rendered_fields(playbook, index):
        for left in render(text, context, syntax=playbook.syntax)[1]:
            target = unknown if left.kind == "unknown" else invalid
            value = left.name if left.kind == "unknown" and left.name else left.text
            if value not in target:
                target.append(value)
    params, _ = render_value(step.params, context, syntax=playbook.syntax)
    problems = []
    if step.agent not in agents:
        problems.append(f"unknown agent {step.agent!r}")
    elif problem := agents[step.agent].params_problem(params):
        problems.append(problem)
    return StepPreview(
        id=step.id,
        agent=step.agent,
        depends_on=list(step.depends_on),
        join=_join(step),
        when=step.when,
        requires_approval=step.requires_approval,
        risk=step.risk,
        instructions=render(step.instructions, context, syntax=playbook.syntax)[0],
        params=params,
        impact=render(step.impact, context, syntax=playbook.syntax)[0],
        unknown_variables=unknown,
        not_variables=invalid,
        problems=problems,
    )


def _join(step: StepSpec) -> str:
    if step.join.strategy == "at_least":
        return f"at_least {step.join.count}"
    return step.join.strategy


_READS_STEPS = re.compile(r"\bsteps\b")


def _simulate(
    playbook: Playbook, shown: dict[str, StepPreview], incident: Mapping[str, Any], values: Mapping[str, Any]
) -> None:
    """Run the scheduler with every started step succeeding; mark what never runs, and why."""
    facts = {s.id: StepFacts() for s in playbook.steps}
    for _ in range(MAX_ROUNDS):
        moves = plan(playbook, facts)
        if moves.empty():
            break
        for step_id, why in moves.skip.items():
            facts[step_id] = StepFacts(status="skipped", skip_spreads=True)
            shown[step_id].outcome, shown[step_id].why = "skipped", why
        for step_id, why in moves.fail.items():
            facts[step_id] = StepFacts(status="failed")
            shown[step_id].outcome, shown[step_id].why = "fails", why
        for step_id in moves.start:
            spec = playbook.step(step_id)
            skipped, note = _condition(spec, facts, incident, values)
            facts[step_id] = StepFacts(status="skipped" if skipped else "completed")
            if skipped:
                shown[step_id].outcome = "skipped"
            shown[step_id].why = note or _missing_outputs(spec, facts)
    for step in playbook.steps:
        if facts[step.id].status == "pending":
            halted = [d for d in step.depends_on if facts[d].status == "failed"]
            shown[step.id].outcome = "never"
            shown[step.id].why = (
                f"waits on {', '.join(halted)}, which fails" if halted else "never starts: a step before it never runs"
            )


def _condition(
    spec: StepSpec, facts: Mapping[str, StepFacts], incident: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[bool, str | None]:
    """(skipped, note): the `when` on what the step sees in the simulated run."""
    if not spec.when:
        return False, None
    activation = {
        "steps": {sid: {"status": f.status, "output": {}} for sid, f in facts.items() if f.status != "pending"},
        "incident": dict(incident),
        "vars": dict(values),
    }
    try:
        if evaluate(spec.when, activation):
            return False, None
    except ConditionError as err:
        if _READS_STEPS.search(spec.when):
            return False, f"condition {spec.when!r} reads earlier steps' results: decided at run time"
        return True, f"condition {err}; a run skips it to be safe"
    assumed = " (every step before it succeeding)" if _READS_STEPS.search(spec.when) else ""
    return True, f"condition is false for this incident and variables{assumed}: {spec.when}"


def _missing_outputs(spec: StepSpec, facts: Mapping[str, StepFacts]) -> str | None:
    skipped = [d for d in spec.depends_on if facts[d].status == "skipped"]
    if skipped and spec.join.strategy == "all":
        return f"runs without the output of {', '.join(skipped)} (skipped)"
    return None
