"""web/schema_form.py: an agent's params schema as form fields, and the submitted text back as params."""

from __future__ import annotations

from activities.registry import agent_specs
from web.schema_form import OTHER, WHOLE, field_of, form_fields, parse_params


def by_name(fields):
    return {f.name: f for f in fields}


def test_each_kind_of_param_gets_its_field_and_comes_back_typed():
    schema = agent_specs()["investigate_logs"].params_schema
    fields = by_name(form_fields(schema, {"paths": ["/var/log/a.log", "b.log"], "max_lines": 20}))
    assert fields["paths"].kind == "lines" and fields["paths"].value == "/var/log/a.log\nb.log"
    assert "log files or glob patterns" in fields["paths"].hint  # the schema's description is the hint
    assert (fields["max_lines"].kind, fields["max_lines"].value) == ("integer", "20")
    assert fields["window_minutes"].kind == "number" and "default 30" in fields["window_minutes"].hint
    assert OTHER not in fields  # additionalProperties: false
    form = {"p.paths": "a.log\r\n\r\nb.log\r\n", "p.max_lines": "5", "p.window_minutes": "0.5", "p.loki_url": ""}
    params, errors = parse_params(form, list(fields.values()))
    assert errors == {}
    assert params == {"paths": ["a.log", "b.log"], "max_lines": 5, "window_minutes": 0.5}  # empty: left out


def test_enums_booleans_json_and_required_marks():
    schema = agent_specs()["remediate_webhook"].params_schema
    fields = by_name(form_fields(schema, {"url": "https://x.example/hook", "headers": {"X-Token": "[REDACTED]"}}))
    assert fields["url"].required and not fields["method"].required
    assert (fields["method"].kind, fields["method"].options) == ("enum", ["POST", "PUT"])
    assert fields["headers"].kind == "json" and '"X-Token": "[REDACTED]"' in fields["headers"].value
    llm = by_name(form_fields(agent_specs()["llm"].params_schema, {"json": False}))
    assert (llm["json"].kind, llm["json"].value) == ("boolean", "false")
    params, errors = parse_params(
        {"p.json": "true", "p.max_tokens": "1.5", "p.temperature": "warm"}, list(llm.values())
    )
    assert params == {"json": True}
    assert errors == {"max_tokens": "max_tokens must be a whole number", "temperature": "temperature must be a number"}


def test_a_schema_without_properties_is_one_json_object_and_other_params_cannot_shadow_fields():
    (whole,) = form_fields({"type": "object"}, {"a": 1})
    assert whole.name == WHOLE and '"a": 1' in whole.value
    assert parse_params({"p.__params__": "[1]"}, [whole]) == ({}, {WHOLE: "Params must be a JSON object"})
    fields = form_fields(agent_specs()["noop"].params_schema, {"summary": "s", "extra": True})
    assert by_name(fields)[OTHER].value.strip().startswith("{") and '"extra": true' in by_name(fields)[OTHER].value
    _, errors = parse_params({"p.summary": "s", "p.__other__": '{"summary": "t"}'}, fields)
    assert "summary" in errors[OTHER]


def test_a_service_problem_names_its_field():
    fields = form_fields(agent_specs()["remediate_command"].params_schema, {})
    assert field_of("step fix: params.argv: [] should be non-empty", fields) == "argv"
    assert field_of("step fix: param 'cwd' still holds [REDACTED]: send its real value", fields) == "cwd"
    assert field_of("step fix: params: 'argv' is a required property", fields) == "argv"
    assert field_of("step params_fix: params.env.X: bad", fields) == "env"
    assert field_of("something else", fields) is None
