"""The playbook editor's form: a playbook as form state (every value as typed), and the submitted form back as a
playbook definition with what could not be read, by input (web/pages/playbook_errors.py places the model's and
the service's problems).

Inputs are named for where they sit: playbook fields by their name (`name`, `incident_type`), variable rows
`v<j>.<field>`, step fields `s<i>.<field>` (`s2.when`, `s2.retry.max_attempts`), a step's params `s<i>.p.<param>`
(web/schema_form.py's fields under the step's prefix). The form's `action` (add, remove:2, up:2, …) edits the list
of steps or variables without saving, so adding and reordering work without JavaScript and nothing typed is lost.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.agents import RISK_RANK, RISKS, AgentSpec
from core.playbook_vars import VariableSpec, spec_of
from web.schema_form import FormField, form_fields, form_values, parse_params

VARIABLE_TYPES = ("string", "number", "integer", "boolean")
JOINS = ("all", "first_success", "at_least")
ON_FAILURE = ("fail", "continue", "skip_dependents")
# Step fields the editor has inputs for; any other field of a step is kept in its "more settings" JSON.
STEP_FIELDS = {
    "id", "agent", "instructions", "params", "depends_on", "when", "join", "requires_approval", "risk", "impact",
    "approval_timeout_seconds", "timeout_seconds", "heartbeat_seconds", "retry", "on_failure", "approvers",
}  # fmt: skip
PLAYBOOK_FIELDS = {
    "id", "version", "name", "description", "incident_type", "variables", "syntax", "parallel", "steps", "approvers",
}  # fmt: skip
RETRY_FIELDS = ("max_attempts", "initial_interval_seconds", "backoff", "max_interval_seconds")
RETRY_DEFAULTS = {
    "max_attempts": "3",
    "initial_interval_seconds": "1.0",
    "backoff": "2.0",
    "max_interval_seconds": "60.0",
}
GENERAL = "_general"  # the errors key for problems no single field owns
CHECKBOX_STEPS = 30  # up to this many steps, depends_on is a checkbox per other step; beyond, a list of ids


@dataclass
class VariableRow:
    name: str = ""
    type: str = "string"
    default: str = ""
    description: str = ""


@dataclass
class StepForm:
    id: str = ""
    agent: str = ""
    instructions: str = ""
    requires_approval: bool = False
    risk: str = ""
    impact: str = ""
    approval_timeout_seconds: str = ""
    approvers_users: str = ""
    approvers_teams: str = ""
    depends_on: list[str] = field(default_factory=list)
    join: str = "all"
    join_count: str = ""
    when: str = ""
    retry: dict[str, str] = field(default_factory=lambda: dict(RETRY_DEFAULTS))
    timeout_seconds: str = "120.0"
    heartbeat_seconds: str = ""
    on_failure: str = "fail"
    more: str = ""  # the step's other fields, as a JSON object
    params: list[FormField] = field(default_factory=list)
    spec: AgentSpec | None = None

    def risks(self) -> tuple[str, ...]:
        """The risks a step of this agent may have: never below the agent's own."""
        least = self.spec.default_risk if self.spec else "low"
        return tuple(r for r in RISKS if RISK_RANK[r] >= RISK_RANK[least])


@dataclass
class EditorForm:
    id: str = ""
    name: str = ""
    incident_type: str = "default"
    description: str = ""
    parallel: bool = True
    syntax: str = "2"  # placeholders: 2 `{{…}}` and `${…}`; 1 `${…}` only (playbooks saved before `{{…}}`)
    more: str = ""
    message: str = ""
    approvers_users: str = ""  # who may approve every step (a step's own approvers win)
    approvers_teams: str = ""
    owner_team: str = ""  # a new playbook's owner team and visibility (services/playbook_sharing.py)
    visibility: str = "everyone"
    variables: list[VariableRow] = field(default_factory=list)
    steps: list[StepForm] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    is_new: bool = True
    base_version: int | None = None

    def step_ids(self) -> list[str]:
        return [s.id for s in self.steps]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_or_empty(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), indent=2, ensure_ascii=False) if value else ""


def step_from_definition(raw: Mapping[str, Any], specs: Mapping[str, AgentSpec]) -> StepForm:
    spec = specs.get(str(raw.get("agent", "")))
    retry = raw.get("retry") or {}
    join = raw.get("join") or {}
    approvers = raw.get("approvers") or {}
    step = StepForm(
        id=_text(raw.get("id")),
        agent=_text(raw.get("agent")),
        instructions=_text(raw.get("instructions")),
        requires_approval=bool(raw.get("requires_approval")),
        risk=_text(raw.get("risk")) or (spec.default_risk if spec else "low"),
        impact=_text(raw.get("impact")),
        approval_timeout_seconds=_text(raw.get("approval_timeout_seconds")),
        approvers_users=", ".join(approvers.get("users") or []),
        approvers_teams=", ".join(approvers.get("teams") or []),
        depends_on=[str(d) for d in raw.get("depends_on") or []],
        join=_text(join.get("strategy")) or "all",
        join_count=_text(join.get("count")),
        when=_text(raw.get("when")),
        retry={k: _text(retry.get(k, RETRY_DEFAULTS[k])) for k in RETRY_FIELDS},
        timeout_seconds=_text(raw.get("timeout_seconds", 120.0)),
        heartbeat_seconds=_text(raw.get("heartbeat_seconds")),
        on_failure=_text(raw.get("on_failure")) or "fail",
        more=_json_or_empty({k: v for k, v in raw.items() if k not in STEP_FIELDS and v is not None}),
        spec=spec,
    )
    step.params = form_fields(spec.params_schema if spec else {"type": "object"}, raw.get("params") or {})
    return step


def new_step(specs: Mapping[str, AgentSpec], taken: list[str]) -> StepForm:
    number = len(taken) + 1
    while f"step_{number}" in taken:
        number += 1
    agent = "noop" if "noop" in specs else next(iter(sorted(specs)), "")
    return step_from_definition({"id": f"step_{number}", "agent": agent}, specs)


def from_definition(definition: Mapping[str, Any], specs: Mapping[str, AgentSpec], *, is_new: bool) -> EditorForm:
    """The form showing a stored definition (or the starting point of a new playbook)."""
    variables = []
    for name, value in (definition.get("variables") or {}).items():
        try:
            spec = spec_of(VariableSpec.model_validate(value) if isinstance(value, Mapping) else value)
        except ValueError:
            variables.append(VariableRow(name, "string", _text(value)))
            continue
        variables.append(VariableRow(name, spec.type, _text(spec.default), spec.description))
    return EditorForm(
        id=_text(definition.get("id")),
        name=_text(definition.get("name")),
        incident_type=_text(definition.get("incident_type")) or "default",
        description=_text(definition.get("description")),
        parallel=bool(definition.get("parallel", True)),
        syntax=_text(definition.get("syntax", 1)),
        approvers_users=", ".join((definition.get("approvers") or {}).get("users") or []),
        approvers_teams=", ".join((definition.get("approvers") or {}).get("teams") or []),
        more=_json_or_empty({k: v for k, v in definition.items() if k not in PLAYBOOK_FIELDS}),
        variables=variables,
        steps=[step_from_definition(s, specs) for s in definition.get("steps") or []],
        is_new=is_new,
        base_version=None if is_new else definition.get("version"),
    )


def blank(specs: Mapping[str, AgentSpec]) -> EditorForm:
    return EditorForm(steps=[new_step(specs, [])])


def _get(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key, "")
    return value if isinstance(value, str) else ""


def _list(form: Any, key: str) -> list[str]:
    return [v for v in form.getlist(key) if isinstance(v, str)] if hasattr(form, "getlist") else []


def _count(form: Mapping[str, Any], key: str, most: int) -> int:
    try:
        return max(0, min(int(_get(form, key) or 0), most))
    except ValueError:
        return 0


def _under(form: Any, prefix: str) -> dict[str, str]:
    items = form.multi_items() if hasattr(form, "multi_items") else form.items()
    return {k[len(prefix) :]: v for k, v in items if k.startswith(prefix) and isinstance(v, str)}


def step_from_form(form: Any, index: int, specs: Mapping[str, AgentSpec]) -> StepForm:
    p = f"s{index}."
    agent = _get(form, p + "agent")
    spec = specs.get(agent)
    step = StepForm(
        id=_get(form, p + "id").strip(),
        agent=agent,
        instructions=_get(form, p + "instructions"),
        requires_approval=_get(form, p + "requires_approval") == "true",
        risk=_get(form, p + "risk"),
        impact=_get(form, p + "impact"),
        approval_timeout_seconds=_get(form, p + "approval_timeout_seconds"),
        approvers_users=_get(form, p + "approvers_users"),
        approvers_teams=_get(form, p + "approvers_teams"),
        depends_on=list(dict.fromkeys(_list(form, p + "depends_on") + _names(_get(form, p + "depends_on_text")))),
        join=_get(form, p + "join") or "all",
        join_count=_get(form, p + "join_count"),
        when=_get(form, p + "when"),
        retry={k: _get(form, f"{p}retry.{k}") for k in RETRY_FIELDS},
        timeout_seconds=_get(form, p + "timeout_seconds"),
        heartbeat_seconds=_get(form, p + "heartbeat_seconds"),
        on_failure=_get(form, p + "on_failure") or "fail",
        more=_get(form, p + "more"),
        spec=spec,
    )
    if spec is not None and step.risk not in step.risks():
        step.risk = spec.default_risk
    fields = form_fields(spec.params_schema if spec else {"type": "object"}, {})
    step.params = form_values(_under(form, p), fields)
    return step


def from_form(form: Any, specs: Mapping[str, AgentSpec]) -> EditorForm:
    """The form state as submitted (every value as typed)."""
    editor = EditorForm(
        id=_get(form, "id").strip(),
        name=_get(form, "name"),
        incident_type=_get(form, "incident_type").strip(),
        description=_get(form, "description"),
        parallel=_get(form, "parallel") == "true",
        syntax="1" if _get(form, "syntax") == "1" else "2",
        more=_get(form, "more"),
        message=_get(form, "message"),
        approvers_users=_get(form, "approvers_users"),
        approvers_teams=_get(form, "approvers_teams"),
        owner_team=_get(form, "owner_team").strip(),
        visibility="team" if _get(form, "visibility") == "team" else "everyone",
        is_new=_get(form, "is_new") == "true",
    )
    base = _get(form, "base_version")
    editor.base_version = int(base) if base.isdigit() else None
    for j in range(_count(form, "variable_count", 100)):
        row = VariableRow(*(_get(form, f"v{j}.{k}") for k in ("name", "type", "default", "description")))
        row.name = row.name.strip()
        row.type = row.type if row.type in VARIABLE_TYPES else "string"
        editor.variables.append(row)
    editor.steps = [step_from_form(form, i, specs) for i in range(_count(form, "step_count", 200))]
    return editor


def apply_action(editor: EditorForm, action: str, specs: Mapping[str, AgentSpec]) -> None:
    """Add, remove or move a step or a variable row (the form's buttons; nothing is saved)."""
    verb, _, where = action.partition(":")
    index = int(where) if where.isdigit() else -1
    steps, rows = editor.steps, editor.variables
    if verb == "add":
        steps.append(new_step(specs, editor.step_ids()))
    elif verb == "remove" and 0 <= index < len(steps):
        gone = steps.pop(index).id
        for step in steps:
            step.depends_on = [d for d in step.depends_on if d != gone]
    elif verb == "up" and 0 < index < len(steps):
        steps[index - 1], steps[index] = steps[index], steps[index - 1]
    elif verb == "down" and 0 <= index < len(steps) - 1:
        steps[index], steps[index + 1] = steps[index + 1], steps[index]
    elif verb == "add_var":
        rows.append(VariableRow())
    elif verb == "remove_var" and 0 <= index < len(rows):
        rows.pop(index)


# ---- form → definition ------------------------------------------------------------------------------------------


def _number(text: str, *, integer: bool = False) -> int | float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if integer:
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


def _names(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]


def _approvers(users: str, teams: str) -> dict[str, list[str]]:
    """Named approvers as the model takes them ({} when none is named)."""
    named = {"users": _names(users), "teams": _names(teams)}
    return {k: v for k, v in named.items() if v}


def _typed_default(row: VariableRow) -> Any:
    if row.type == "string":
        return row.default
    if row.type == "boolean":
        if row.default.strip().lower() not in ("true", "false"):
            raise ValueError("must be true or false")
        return row.default.strip().lower() == "true"
    return _number(row.default, integer=row.type == "integer")


def _variables(editor: EditorForm, errors: dict[str, str]) -> dict[str, Any]:
    rows = [r for r in editor.variables if r.name or r.default or r.description]
    full: dict[str, Any] = {}
    for j, row in enumerate(editor.variables):
        if row not in rows:
            continue
        if not row.name:
            errors[f"v{j}.name"] = "variable name: required"
            continue
        if row.name in full:
            errors[f"v{j}.name"] = f"variable {row.name}: declared twice"
            continue
        spec: dict[str, Any] = {"type": row.type}
        if row.default != "":
            try:
                spec["default"] = _typed_default(row)
            except ValueError as err:
                errors[f"v{j}.default"] = f"variable {row.name} default: {err}"
        if row.description:
            spec["description"] = row.description
        full[row.name] = spec
    # The shorthand {"name": "default"} where it says everything: the form every playbook model reads.
    if all(s["type"] == "string" and "description" not in s and "default" in s for s in full.values()):
        return {name: s["default"] for name, s in full.items()}
    return full


def _json_object(text: str, key: str, label: str, errors: dict[str, str]) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        errors[key] = f"{label}: not valid JSON ({err})"
        return {}
    if not isinstance(value, dict):
        errors[key] = f"{label}: must be a JSON object"
        return {}
    return value


def _numbers(texts: Mapping[str, str], prefix: str, label: str, errors: dict[str, str]) -> dict[str, Any]:
    """The non-empty number fields as numbers (`max_attempts` and `count` whole); errors by input name."""
    out: dict[str, Any] = {}
    for key, text in texts.items():
        if not text.strip():
            continue
        try:
            out[key] = _number(text, integer=key in ("max_attempts", "count"))
        except ValueError as err:
            errors[prefix + key] = f"{label}{key.replace('_', ' ')}: {err}"
    return out


def _step_definition(step: StepForm, i: int, errors: dict[str, str]) -> dict[str, Any]:
    p = f"s{i}."
    out: dict[str, Any] = _json_object(step.more, p + "more", f"step {step.id or i + 1} more settings", errors)
    out.update({"id": step.id, "agent": step.agent, "instructions": step.instructions})
    params, problems = parse_params(_under_fields(step), step.params)
    errors.update({f"{p}p.{name}": why for name, why in problems.items()})
    out["params"] = params
    out["depends_on"] = list(dict.fromkeys(step.depends_on))
    if step.when.strip():
        out["when"] = step.when.strip()
    timings = {
        "approval_timeout_seconds": step.approval_timeout_seconds,
        "timeout_seconds": step.timeout_seconds,
        "heartbeat_seconds": step.heartbeat_seconds,
    }
    out.update(_numbers(timings, p, "", errors))
    count = _numbers({"count": step.join_count}, p + "join_", "join ", errors)
    out["join"] = {"strategy": step.join, **count}
    out["retry"] = _numbers(step.retry, p + "retry.", "retry ", errors)
    out["requires_approval"] = step.requires_approval
    if step.risk:
        out["risk"] = step.risk
    if step.impact:
        out["impact"] = step.impact
    if approvers := _approvers(step.approvers_users, step.approvers_teams):
        out["approvers"] = approvers
    out["on_failure"] = step.on_failure
    return out


def _under_fields(step: StepForm) -> dict[str, str]:
    return {f.input_name: f.value for f in step.params}


def to_definition(editor: EditorForm) -> tuple[dict[str, Any], dict[str, str]]:
    """The playbook definition the form holds, and what could not be read (input name → why)."""
    errors: dict[str, str] = {}
    definition = _json_object(editor.more, "more", "more settings", errors)
    definition.update(
        {
            "id": editor.id,
            "name": editor.name,
            "incident_type": editor.incident_type or "default",
            "description": editor.description,
            "variables": _variables(editor, errors),
            "syntax": int(editor.syntax),
            "parallel": editor.parallel,
            "steps": [_step_definition(step, i, errors) for i, step in enumerate(editor.steps)],
        }
    )
    if approvers := _approvers(editor.approvers_users, editor.approvers_teams):
        definition["approvers"] = approvers
    return definition, errors
