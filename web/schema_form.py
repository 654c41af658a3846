"""An agent's params JSON schema as HTML form fields, and the submitted form back as params.

Each top-level property becomes one field: strings (a text box, or a text area for long ones), numbers and
integers, booleans and string enums (a select: "not set" stays possible unless the param is required), arrays of
strings (one per line); anything else (objects, arrays of objects, unions) is a JSON text area. A schema without
properties is one JSON text area for the whole object, and params the schema does not name (when it allows them)
go in an "other params" JSON text area. An empty field leaves its param out. The agent's schema itself is checked
by the service (AgentSpec.params_problem); this module only turns text into JSON values, naming the field when it
cannot.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["string", "text", "number", "integer", "boolean", "enum", "lines", "json"]
PREFIX = "p."  # form field names: p.<param>
WHOLE = "__params__"  # a schema without properties: the whole object as JSON
OTHER = "__other__"  # params the schema does not name, as JSON
LONG_TEXT = 200  # a string that may be longer than this gets a text area
_SCALARS: dict[str, Kind] = {"number": "number", "integer": "integer", "boolean": "boolean"}


@dataclass
class FormField:
    name: str  # the param's key (or WHOLE / OTHER)
    kind: Kind
    label: str
    value: str = ""  # as the form shows it
    required: bool = False
    hint: str = ""
    options: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def dom_id(self) -> str:
        return "f-" + "".join(c if c.isalnum() else "-" for c in self.name)


def _kind(schema: Mapping[str, Any]) -> Kind:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        return "enum"
    kind = schema.get("type")
    if kind == "string":
        return "text" if int(schema.get("maxLength", LONG_TEXT + 1)) > LONG_TEXT else "string"
    if kind in _SCALARS:
        return _SCALARS[kind]
    items = schema.get("items")
    if kind == "array" and isinstance(items, Mapping) and items.get("type") == "string" and "enum" not in items:
        return "lines"
    return "json"


def _shown(kind: Kind, value: Any) -> str:
    """A param's value as its field shows it."""
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value is True else "false" if value is False else json.dumps(value)
    if kind in ("string", "text", "enum") and isinstance(value, str):
        return value
    if kind in ("number", "integer") and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    if kind == "lines" and isinstance(value, list) and all(isinstance(v, str) and "\n" not in v for v in value):
        return "\n".join(value)
    return json.dumps(value, indent=2, ensure_ascii=False)


def _hint(schema: Mapping[str, Any], kind: Kind) -> str:
    parts = [str(schema["description"])] if isinstance(schema.get("description"), str) else []
    if kind == "lines":
        parts.append("one per line")
    if kind == "json":
        parts.append("JSON")
    if "default" in schema:
        parts.append(f"default {json.dumps(schema['default'])}")
    return "; ".join(parts)


def form_fields(schema: Mapping[str, Any], values: Mapping[str, Any]) -> list[FormField]:
    """The fields of a params form, showing `values` (already redacted: this shows what it is given)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return [FormField(WHOLE, "json", "Params", _shown("json", dict(values)), hint="a JSON object")]
    required = set(schema.get("required") or ())
    fields = []
    for name, sub in properties.items():
        sub = sub if isinstance(sub, Mapping) else {}
        kind = _kind(sub)
        fields.append(
            FormField(
                name,
                kind,
                str(sub.get("title") or name),
                _shown(kind, values.get(name)),
                required=name in required,
                hint=_hint(sub, kind),
                options=list(sub.get("enum", [])) if kind == "enum" else [],
            )
        )
    if schema.get("additionalProperties", True) is not False:
        other = {k: v for k, v in values.items() if k not in properties}
        hint = "a JSON object of params the agent's schema does not name"
        fields.append(FormField(OTHER, "json", "Other params", _shown("json", other) if other else "", hint=hint))
    return fields


def form_values(form: Mapping[str, Any], fields: list[FormField]) -> list[FormField]:
    """The same fields showing what was submitted (to show the form again with its errors)."""
    for item in fields:
        raw = form.get(item.input_name, "")
        item.value = raw if isinstance(raw, str) else ""
    return fields


def _number(text: str, integer: bool) -> int | float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    if number.is_integer() and ("." not in text and "e" not in text.lower() or integer):
        return int(number)
    if integer:
        raise ValueError("must be a whole number")
    return number


def _parse(kind: Kind, text: str) -> Any:
    if kind in ("string", "text", "enum"):
        return text
    if kind in ("number", "integer"):
        return _number(text.strip(), kind == "integer")
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError("must be yes or no")
        return text == "true"
    if kind == "lines":
        return [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    try:
        return json.loads(text)
    except ValueError as err:
        raise ValueError(f"is not valid JSON ({err})") from None


def parse_params(form: Mapping[str, Any], fields: list[FormField]) -> tuple[dict[str, Any], dict[str, str]]:
    """The params a submitted form holds, and what is wrong per field (the param's key → why)."""
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for item in fields:
        raw = form.get(item.input_name, "")
        text = raw if isinstance(raw, str) else ""
        if not text.strip():
            continue  # left empty: the param is left out (the schema says whether it may be)
        try:
            value = _parse(item.kind, text)
        except ValueError as err:
            errors[item.name] = f"{item.label} {err}"
            continue
        if item.name in (WHOLE, OTHER):
            if not isinstance(value, dict):
                errors[item.name] = f"{item.label} must be a JSON object"
                continue
            clash = sorted(set(value) & set(params)) if item.name == OTHER else []
            if clash:
                errors[item.name] = f"{item.label} name {', '.join(clash)}, which have fields of their own"
                continue
            params.update(value)
        else:
            params[item.name] = value
    return params, errors


_PARAM_PATH = re.compile(r"(?:^|\s)params\.([^.:\s]+)")
_PARAM_NAMED = re.compile(r"(?:^|\s)param '([^']+)'")
_REQUIRED = re.compile(r"'([^']+)' is a required property")


def field_of(problem: str, fields: list[FormField]) -> str | None:
    """The field a service's problem is about: "step x: params.<key>…: why", "param '<key>' …", or
    "'<key>' is a required property"; a schema without properties has one field for them all."""
    names = {f.name for f in fields}
    for pattern in (_PARAM_PATH, _PARAM_NAMED, _REQUIRED):
        found = pattern.search(problem)
        if found and found[1] in names:
            return found[1]
    if WHOLE in names and "params" in problem:
        return WHOLE
    return None
