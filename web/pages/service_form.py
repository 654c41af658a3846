"""The service form's fields ↔ a service definition (core/services.py's ServiceBase), and the model's errors as
messages next to the form's fields.

The form is flat (check_type, url, host, port, …); lists are typed comma-separated (log paths one a line); the
settings few people change (metrics queries, remediation, degraded incidents) are one JSON box, `advanced`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

ADVANCED = ("metrics_queries", "remediation", "degraded_incident")
NUMBERS = (
    "interval_seconds", "timeout_seconds", "degraded_latency_ms", "failure_threshold", "recovery_threshold",
    "reopen_within_seconds",
)  # fmt: skip
TEXTS = ("description", "incident_type", "severity", "team", "default_playbook")
CHECK_FIELDS = {
    "http": {"url": "url", "expect_status_below": "expect_status_below", "keyword": "keyword",
             "tls_expiry_days": "tls_expiry_days"},
    "tcp": {"host": "host", "port": "port"},
    "dns": {"name": "dns_name", "record_type": "record_type", "expect": "expect"},
}  # fmt: skip
# Where an error of a definition's field shows on the form.
FIELD_OF = {f"check.{k}": v for fields in CHECK_FIELDS.values() for k, v in fields.items()} | {
    "check": "check_type", "public": "public_listed", "public.name": "public_name", "public.group": "public_group",
}  # fmt: skip


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def service_body(values: Mapping[str, str], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The definition the form describes (a ServiceBase's fields), on top of what is stored (editing keeps
    `enabled`). Raises ValueError "advanced: …" when the JSON box is not a JSON object of the advanced settings."""
    body: dict[str, Any] = {"enabled": stored.get("enabled", True)}
    kind = values.get("check_type", "http")
    check: dict[str, Any] = {"type": kind}
    for key, field in CHECK_FIELDS.get(kind, {}).items():
        value = values.get(field, "").strip()
        if key == "expect":
            check[key] = _words(value)
        elif value:
            check[key] = value
    body["check"] = check
    for name in NUMBERS:
        value = values.get(name, "").strip()
        if value:
            body[name] = value
        elif name == "degraded_latency_ms":
            body[name] = None
    for name in TEXTS:
        value = values.get(name, "").strip()
        if value or name in ("description", "team", "default_playbook"):
            body[name] = value or (None if name in ("team", "default_playbook") else "")
    body["dependencies"] = _words(values.get("dependencies", ""))
    body["tags"] = _words(values.get("tags", ""))
    body["log_paths"] = [line.strip() for line in values.get("log_paths", "").splitlines() if line.strip()]
    body["public"] = _public(values)
    body.update(_advanced(values.get("advanced", "")))
    return body


def _public(values: Mapping[str, str]) -> dict[str, Any] | None:
    """The public status page listing: on when its box is ticked (the model refuses an empty name)."""
    if not values.get("public_listed"):
        return None
    return {"name": values.get("public_name", ""), "group": values.get("public_group", "").strip() or None}


def _advanced(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"advanced: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(parsed, dict):
        raise ValueError('advanced: a JSON object, e.g. {"metrics_queries": []}')
    unknown = sorted(set(parsed) - set(ADVANCED))
    if unknown:
        raise ValueError(f"advanced: {unknown[0]!r} is not one of {', '.join(ADVANCED)}")
    return parsed


def form_values(config: Mapping[str, Any]) -> dict[str, str]:
    """A stored definition as the form's fields."""
    check = config.get("check", {})
    kind = check.get("type", "http")
    values: dict[str, str] = {"check_type": kind}
    for key, field in CHECK_FIELDS.get(kind, {}).items():
        value = check.get(key)
        values[field] = ", ".join(value) if isinstance(value, list) else ("" if value is None else str(value))
    for name in (*NUMBERS, *TEXTS):
        value = config.get(name)
        values[name] = "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    values["dependencies"] = ", ".join(config.get("dependencies", []))
    values["tags"] = ", ".join(config.get("tags", []))
    values["log_paths"] = "\n".join(config.get("log_paths", []))
    listing = config.get("public") or {}
    values["public_listed"] = "on" if listing else ""
    values["public_name"], values["public_group"] = listing.get("name") or "", listing.get("group") or ""
    advanced = {k: config[k] for k in ADVANCED if config.get(k)}
    values["advanced"] = json.dumps(advanced, indent=2) if advanced else ""
    return values


def _form_field(path: str) -> str:
    """The form field showing an error of the definition's field `path` (dotted)."""
    if path in FIELD_OF:
        return FIELD_OF[path]
    head = path.split(".")[0]
    return "advanced" if head in ADVANCED else head or "form"


def form_errors(err: Exception) -> dict[str, str]:
    """{form field: message} from the model's ValidationError, or a domain error's / ValueError's "field: why"."""
    errors: dict[str, str] = {}
    if isinstance(err, ValidationError):
        for e in err.errors():
            loc = [str(p) for p in e["loc"]]
            if loc[:1] == ["check"] and len(loc) > 1:
                loc = ["check", *loc[2:]] if len(loc) > 2 else ["check"]  # drop the union's tag: check.http.url
            message = e["msg"].removeprefix("Value error, ")
            path = ".".join(p for p in loc if not p.isdigit())
            if not path:  # a model-level rule says which field: "degraded_incident: …"
                field, _, rest = message.partition(": ")
                path, message = (field, rest) if rest and " " not in field else ("form", message)
            errors.setdefault(_form_field(path), message)
        return errors
    field, _, message = str(err).partition(": ")
    if not message or " " in field:
        return {"form": str(err)}
    return {_form_field(field): message}
