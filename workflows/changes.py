"""Run-time changes to a running incident's DAG, checked before they reach the workflow history.

Pure functions over the pinned playbook and the step facts: the Update validators call them, and a
rejected change never becomes an event in history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from core.dag import StepFacts
from core.errors import Invalid
from core.playbook import Playbook, StepSpec, risk_floor_problem, structure_problems


class ChangeRejected(Invalid):
    pass


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def nul_problem(value: Any, where: str = "") -> str | None:
    """Where a NUL character is in a change's text (keys too), or None: Postgres stores no NUL, so a change that
    holds one could be taken and then never recorded."""
    if isinstance(value, str):
        return f"{where or 'a value'}: a NUL character is not allowed" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and "\x00" in key:
                return f"{where or 'an object'}: a NUL character is not allowed in a key"
            if problem := nul_problem(item, path):
                return problem
    if isinstance(value, list):
        for index, item in enumerate(value):
            if problem := nul_problem(item, f"{where}[{index}]"):
                return problem
    return None


def refuse_nul(change: Any) -> None:
    """The validators' check: a change holding a NUL anywhere is refused before it reaches the history."""
    problem = nul_problem(dataclasses.asdict(change))
    if problem:
        raise ChangeRejected(problem)


def check_add(
    playbook: Playbook,
    facts: dict[str, StepFacts],
    raw: dict[str, Any],
    known: set[str],
    risks: Mapping[str, str] | None = None,
) -> StepSpec:
    """The step to add; with its agents' risks, at least as risky as its agent (refused if it says less)."""
    try:
        step = StepSpec.model_validate(raw)
    except ValidationError as err:
        raise ChangeRejected(f"invalid step: {_first_error(err)}") from None
    if step.id in facts:
        raise ChangeRejected(f"step {step.id}: a step with this id exists")
    if known and step.agent not in known:
        raise ChangeRejected(f"step {step.id}: unknown agent {step.agent!r}")
    least = (risks or {}).get(step.agent)
    if least is not None:
        problem = risk_floor_problem(step, least)
        if problem:
            raise ChangeRejected(problem)
        if "risk" not in step.model_fields_set:
            step = step.model_copy(update={"risk": least})
    candidate = playbook.model_copy(update={"steps": [*playbook.steps, step]})
    problems = structure_problems(candidate)
    if problems:
        raise ChangeRejected(problems[0])
    return step


def check_remove(playbook: Playbook, facts: dict[str, StepFacts], step_id: str) -> None:
    if step_id not in facts:
        raise ChangeRejected(f"step {step_id}: no such step")
    if facts[step_id].status != "pending":
        raise ChangeRejected(f"step {step_id}: already {facts[step_id].status}; only pending steps can be removed")
    dependents = [s.id for s in playbook.steps if step_id in s.depends_on]
    if dependents:
        raise ChangeRejected(f"step {step_id}: steps {', '.join(dependents)} depend on it; remove or change them first")


def check_params(_playbook: Playbook, facts: dict[str, StepFacts], step_id: str, params: Any) -> None:
    if step_id not in facts:
        raise ChangeRejected(f"step {step_id}: no such step")
    if facts[step_id].status != "pending":
        raise ChangeRejected(f"step {step_id}: already {facts[step_id].status}; only pending steps can be changed")
    if not isinstance(params, dict):
        raise ChangeRejected(f"step {step_id}: params must be an object")


def check_retry(
    playbook: Playbook, facts: dict[str, StepFacts], step_id: str | None, params: Any, halted: bool
) -> list[str]:
    """The steps a retry_step would run again."""
    if not halted:
        raise ChangeRejected("nothing to retry: the workflow is not waiting on a failed step")
    failed = [s.id for s in playbook.steps if facts[s.id].status == "failed" and s.on_failure == "fail"]
    if step_id is None:
        if params is not None and len(failed) != 1:
            raise ChangeRejected("params need a step_id when several steps failed")
        return failed
    if step_id not in facts:
        raise ChangeRejected(f"step {step_id}: no such step")
    if step_id not in failed:
        raise ChangeRejected(f"step {step_id}: it is {facts[step_id].status}, not a failed step to retry")
    if params is not None and not isinstance(params, dict):
        raise ChangeRejected(f"step {step_id}: params must be an object")
    return [step_id]
