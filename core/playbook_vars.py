"""Playbook variables: `{{service_name}}`, `{{incident.severity}}`, `{{vars.region}}`, `{{region}}` (and `${…}`).

Rendering is a plain lookup of a dotted name in a flat mapping built here (`variable_context`): there is no
template engine, no attribute or item access, no filter, no expression. Whatever sits between `{{` and `}}` that
is not a known name is left exactly as written, and reported (unknown name, or not a variable at all) — so
`{{7*7}}`, `{{ ''.__class__ }}`, `{{config}}` or `{% … %}` stay inert text. Values are inserted once, never
rendered again: an incident title that contains `{{vars.token}}` stays that text.

A playbook's `syntax` says which placeholders it uses: 1 (playbooks saved before `{{…}}` existed, and every
pinned run of them) only `${…}`, exactly as before; 2 (new saves) `{{…}}` and `${…}`.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

if TYPE_CHECKING:
    from core.playbook import Playbook

VariableType = Literal["string", "number", "integer", "boolean"]
Scalar = StrictStr | StrictBool | StrictInt | StrictFloat
# What an incident gives every step: `{{incident.<field>}}`, and `{{service_name}}` for its service.
INCIDENT_FIELDS = ("incident_id", "title", "service", "severity", "incident_type", "service_url")
CONTEXT_NAMES = frozenset({*(f"incident.{f}" for f in INCIDENT_FIELDS), "service_name"})
SYNTAXES = (1, 2)

# A dotted name, as `${…}` has always accepted (string.Template's pattern, case-insensitive).
NAME = re.compile(r"(?ai:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)*)")
_ID = r"(?ai:[_a-z][_a-z0-9]*)"
VARIABLE_NAME = re.compile(_ID)  # a declared variable's name (syntax 2): `{{name}}` and `{{vars.name}}` reach it
# One pass over both syntaxes, so a value inserted is never read as a placeholder again.
_PLACEHOLDER = re.compile(
    r"\{\{(?P<mustache>.*?)\}\}"
    r"|\{%(?P<tag>.*?)%\}"
    rf"|\$(?:(?P<escaped>\$)|(?P<named>{_ID})|\{{(?P<braced>{NAME.pattern})\}}|(?P<invalid>))",
    re.DOTALL,
)


class VariableSpec(BaseModel):
    """A declared variable: its type, default and what it means (shown in the editor and the preview)."""

    model_config = ConfigDict(extra="forbid")

    type: VariableType = "string"
    default: Scalar | None = None
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _default_fits(self) -> VariableSpec:
        if self.default is not None and not fits(self.type, self.default):
            raise ValueError(f"default {self.default!r} is not a{'n' if self.type == 'integer' else ''} {self.type}")
        return self


def fits(kind: VariableType, value: Any) -> bool:
    """Whether a value already has the type (no conversion: a default must be written as its type)."""
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str)


def spec_of(value: Any) -> VariableSpec:
    """A declared variable's spec; the old shorthand (`"region": "eu-1"`) is a variable of its value's type."""
    if isinstance(value, VariableSpec):
        return value
    kind: VariableType = (
        ("boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else "number")
        if not isinstance(value, str)
        else "string"
    )
    return VariableSpec(type=kind, default=value)


def parse_variables(raw: Any) -> dict[str, Any]:
    """Playbook.variables as given: shorthand scalars stay as they are (a stored definition reads back the same),
    objects become VariableSpec. Raises ValueError naming the variable."""
    if not isinstance(raw, Mapping):
        raise ValueError("must be an object of name: value or name: {type, default, description}")
    parsed: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name or len(name) > 100:
            raise ValueError(f"{name!r}: a variable's name is 1 to 100 characters")
        if isinstance(value, VariableSpec) or (isinstance(value, str | int | float) and value is not None):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number")
            parsed[name] = value
        elif isinstance(value, Mapping):
            try:
                parsed[name] = VariableSpec.model_validate(value)
            except ValueError as err:  # pydantic's ValidationError is one
                raise ValueError(f"{name}: {_first_error(err)}") from None
        else:
            raise ValueError(f"{name}: must be a string, number, boolean or {{type, default, description}}")
    return parsed


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return str(err)
    parts = []
    for item in errors():
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def coerce(name: str, kind: VariableType, value: Any) -> Any:
    """A value given for a run or a preview (a command line's text, or JSON) as the variable's type."""
    if value is None or fits(kind, value):
        return value
    if kind == "string" and isinstance(value, int | float):
        return format_value(value)
    if isinstance(value, str):
        text = value.strip()
        if kind == "integer" and re.fullmatch(r"[+-]?[0-9]{1,18}", text):
            return int(text)
        if kind == "number":
            if re.fullmatch(r"[+-]?[0-9]{1,18}", text):
                return int(text)
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
        if kind == "boolean" and text.lower() in _BOOLEANS:
            return _BOOLEANS[text.lower()]
    raise ValueError(f"vars.{name}: {value!r} is not a{'n' if kind == 'integer' else ''} {kind}")


_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False, "on": True, "off": False}


def variable_values(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Each variable's value before any override: the shorthand's value, or the declared default."""
    return {name: value.default if isinstance(value, VariableSpec) else value for name, value in variables.items()}


def variable_context(playbook: Playbook, incident: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The flat mapping placeholders read: `region` and `vars.region` (declared defaults, then overrides, typed),
    `incident.<field>` and `service_name` (the incident's, which win over a variable of the same bare name).
    Raises ValueError naming a variable that is not declared or a value of the wrong type."""
    values = variable_values(playbook.variables)
    for name, value in overrides.items():
        key = name.removeprefix("vars.")
        if key not in playbook.variables:
            declared = ", ".join(sorted(playbook.variables)) or "none"
            raise ValueError(f"vars.{key}: not a variable of this playbook (declared: {declared})")
        values[key] = coerce(key, spec_of(playbook.variables[key]).type, value)
    context: dict[str, Any] = {}
    for name, value in values.items():
        context[name] = value
        context[f"vars.{name}"] = value
    for field in INCIDENT_FIELDS:
        if field in incident:
            context[f"incident.{field}"] = incident[field]
    if "service" in incident:
        context["service_name"] = incident["service"]
    return context


def known_names(playbook: Playbook) -> set[str]:
    """Every name a placeholder of this playbook may use (what a run's context always holds)."""
    return {*CONTEXT_NAMES, *playbook.variables, *(f"vars.{n}" for n in playbook.variables)}


def format_value(value: Any) -> str:
    """How a value reads inside text: JSON's spelling of booleans and of nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Placeholder:
    """A `{{…}}` (or `${…}`) that was not filled in: `unknown` (a name nobody defines) or `invalid` (not a name at
    all, such as `{{7*7}}`, or a `{% … %}` tag); left in the text exactly as written."""

    text: str
    name: str | None
    kind: Literal["unknown", "invalid"]


def render(text: str, context: Mapping[str, Any], *, syntax: int) -> tuple[str, list[Placeholder]]:
    """The text with every known placeholder replaced, in one pass, and the placeholders left as written."""
    if syntax not in SYNTAXES:
        raise ValueError(f"syntax must be 1 or 2, got {syntax!r}")
    left: list[Placeholder] = []

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if match.group("escaped") is not None:
            return "$"
        if match.group("invalid") is not None:
            return whole
        dollar = match.group("named") or match.group("braced")
        if dollar is not None:
            return format_value(context[dollar]) if dollar in context else whole
        if match.group("tag") is not None:
            left.append(Placeholder(whole, None, "invalid"))
            return whole
        inner = match.group("mustache").strip()
        if not NAME.fullmatch(inner):
            left.append(Placeholder(whole, None, "invalid"))
            return whole
        if inner not in context:
            left.append(Placeholder(whole, inner, "unknown"))
            return whole
        return format_value(context[inner])

    if syntax < 2:
        return DollarTemplate(text).safe_substitute(context), left  # exactly what substitute() always did
    return _PLACEHOLDER.sub(replace, text), left


class DollarTemplate(string.Template):
    # ${incident.service} and ${vars.region} as well as ${region}; nothing else is ever interpreted.
    braceidpattern = r"(?a:[_a-z][_a-z0-9]*(?:\.[_a-z][_a-z0-9]*)*)"


def render_text(text: str, context: Mapping[str, Any], *, syntax: int) -> tuple[str, list[str]]:
    """The rendered text and the unknown names in it (a name used twice is listed once)."""
    rendered, left = render(text, context, syntax=syntax)
    return rendered, _unique(p.name for p in left if p.kind == "unknown" and p.name)


def render_value(value: Any, context: Mapping[str, Any], *, syntax: int) -> tuple[Any, list[str]]:
    """render_text over a step's params: strings inside dicts and lists; keys and other values as they are."""
    unknown: list[str] = []
    for _, text in iter_strings(value):
        unknown += render_text(text, context, syntax=syntax)[1]
    return _map_strings(value, lambda text: render(text, context, syntax=syntax)[0]), _unique(unknown)


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, fn) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, fn) for item in value]
    return value


def iter_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every string in a value: `.key` for a dict's item, `[n]` for a list's."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            part = f".{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(key)) else f"[{str(key)!r}]"
            yield from iter_strings(item, path + part)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_strings(item, f"{path}[{index}]")


def _unique(names: Any) -> list[str]:
    return list(dict.fromkeys(names))


def rendered_fields(playbook: Playbook, index: int) -> Iterator[tuple[str, str]]:
    """(path, text) of what a run fills in for the step at `index`: its instructions, params and impact."""
    step = playbook.steps[index]
    yield f"steps[{index}].instructions", step.instructions
    yield from iter_strings(step.params, f"steps[{index}].params")
    yield f"steps[{index}].impact", step.impact


def template_problems(playbook: Playbook) -> list[str]:
    """Why the playbook's placeholders cannot all be filled in: `steps[2].params.target: unknown variable 'regoin'`
    for each `{{name}}` that is neither declared nor in the incident context (syntax 2; syntax 1 never reads
    `{{…}}`), and variables whose bare name the incident context hides."""
    if playbook.syntax < 2:
        return []
    problems = []
    for name in playbook.variables:
        if not VARIABLE_NAME.fullmatch(name):
            problems.append(f"variables.{name}: a name is letters, digits and _, not starting with a digit")
        elif name in CONTEXT_NAMES:
            problems.append(f"variables.{name}: clashes with the incident context's {name!r}; choose another name")
    known = dict.fromkeys(known_names(playbook), "")
    for index in range(len(playbook.steps)):
        for path, text in rendered_fields(playbook, index):
            for placeholder in render(text, known, syntax=playbook.syntax)[1]:
                if placeholder.kind == "unknown":
                    problems.append(f"{path}: unknown variable {placeholder.name!r}")
    return problems
