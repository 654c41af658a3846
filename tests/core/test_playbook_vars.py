"""Playbook variables (issue 23): `{{…}}` is a lookup of a dotted name and nothing else; SSTI payloads stay text;
typed defaults; syntax 1 (stored and pinned playbooks from before) renders exactly as `${…}` always did."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from core.playbook import Playbook, draft_playbook, new_playbook, substitute
from core.playbook_vars import render, render_text, render_value, variable_context

INCIDENT = {
    "incident_id": 42,
    "title": "checkout 503",
    "service": "checkout",
    "severity": "P1",
    "incident_type": "outage",
    "service_url": None,
}

# The classic server-side template injection probes (Jinja2, Twig, Mako, ERB, Freemarker, Velocity …).
SSTI = [
    "{{7*7}}",
    "{{ 7*'7' }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ config.items() }}",
    "{{ [].class.base.subclasses() }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{% import os %}{{ os.system('id') }}",
    "{{ service_name | upper }}",
    "{{ service_name ~ 'x' }}",
    "{{ incident['severity'] }}",
    "${7*7}",
    "#{7*7}",
    "<%= 7*7 %>",
    "${{7*7}}",
    "{{=7*7}}",
    "{{{{7*7}}}}",
]
# Dotted names that look like attribute walks: names, so they are looked up (and nobody defines them).
NAME_PROBES = ["{{config}}", "{{ self }}", "{{ cycler.__init__.__globals__ }}", "{{ incident.__class__ }}", "{{vars}}"]


def playbook(variables: dict[str, Any] | None = None, text: str = "", **extra: Any) -> Playbook:
    step = {"id": "act", "agent": "noop", "instructions": text, "params": {"target": text}}
    return draft_playbook({"id": "pb", "name": "pb", "variables": variables or {}, "steps": [step], **extra})


def context(pb: Playbook, **overrides: Any) -> dict[str, Any]:
    return variable_context(pb, INCIDENT, overrides)


def test_names_from_the_incident_and_the_variables_are_filled_in():
    pb = playbook({"region": "eu-1", "retries": {"type": "integer", "default": 3}})
    text = "{{service_name}}/{{ incident.severity }}/{{incident.incident_id}}/{{vars.region}}/{{region}}/{{retries}}"
    assert render_text(text, context(pb), syntax=2) == ("checkout/P1/42/eu-1/eu-1/3", [])
    assert render_text("{{\n  service_name\t}}", context(pb), syntax=2) == ("checkout", [])
    assert render_text("url={{incident.service_url}}", context(pb), syntax=2) == ("url=", [])
    # ${…} keeps working in syntax 2, beside {{…}}.
    assert render_text("${incident.service} in ${vars.region}", context(pb), syntax=2) == ("checkout in eu-1", [])


def test_an_unknown_name_stays_as_written_and_is_reported_once():
    pb = playbook({"region": "eu-1"})
    assert render_text("{{regoin}} {{ regoin }} {{vars.nope}}", context(pb), syntax=2) == (
        "{{regoin}} {{ regoin }} {{vars.nope}}",
        ["regoin", "vars.nope"],
    )


@pytest.mark.parametrize("payload", SSTI)
def test_template_injection_payloads_stay_inert_text(payload):
    pb = playbook({"region": "eu-1"})
    ctx = context(pb)
    rendered, left = render(payload, ctx, syntax=2)
    assert rendered == payload  # nothing evaluated: never 49, an object, a file's content
    if "{{" in payload or "{%" in payload:
        assert left and all(p.kind in ("invalid", "unknown") for p in left)  # reported: not a variable, or unknown
    value, unknown = render_value({"a": [payload]}, ctx, syntax=2)
    assert value == {"a": [rendered]}


@pytest.mark.parametrize("payload", NAME_PROBES)
def test_attribute_looking_names_are_unknown_names_and_refused_on_save(payload):
    pb = playbook({"region": "eu-1"})
    rendered, unknown = render_text(payload, context(pb), syntax=2)
    assert rendered == payload and unknown == [payload.strip("{} ")]
    with pytest.raises(ValidationError, match=r"steps\[0\]\.instructions: unknown variable"):
        new_playbook({"id": "pb", "name": "pb", "steps": [{"id": "a", "agent": "noop", "instructions": payload}]})


def test_a_value_is_inserted_once_never_rendered_again():
    pb = playbook({"token": "s3cret"})
    incident = INCIDENT | {"title": "{{vars.token}} ${token} {{7*7}}"}
    ctx = variable_context(pb, incident, {})
    assert render_text("title: {{incident.title}}", ctx, syntax=2)[0] == "title: {{vars.token}} ${token} {{7*7}}"
    assert substitute({"t": ["{{incident.title}}"]}, ctx, 2) == {"t": ["{{vars.token}} ${token} {{7*7}}"]}


def test_syntax_1_renders_exactly_as_substitute_always_did():
    """A playbook stored, or pinned by a run, before `{{…}}` existed has no `syntax`: it reads as 1, and its `{{x}}`
    stays literal, so a replayed run computes what it computed."""
    old_definition = {
        "id": "old",
        "name": "old",
        "variables": {"region": "eu-1"},
        "steps": [{"id": "a", "agent": "noop", "instructions": "{{region}} ${region} ${incident.service} $$5"}],
    }
    pinned = Playbook.model_validate(old_definition)
    assert pinned.syntax == 1 and pinned.variables == {"region": "eu-1"}
    assert pinned.variable_values() == pinned.variables  # what `${…}` and a `when`'s vars always read
    flat = {"region": "eu-1", "vars.region": "eu-1", "incident.service": "checkout"}
    text = pinned.steps[0].instructions
    assert substitute(text, flat) == "{{region}} eu-1 checkout $5"
    assert substitute(text, flat, 1) == substitute(text, flat)
    assert substitute(text, flat, 2) == "eu-1 eu-1 checkout $5"
    # The same definition saved now (no syntax given) is syntax 2; a stored one keeps the syntax it was saved with.
    assert new_playbook(old_definition).syntax == 2
    assert new_playbook(pinned.model_dump(mode="json")).syntax == 1
    assert render_text(text, {"region": "eu-1"}, syntax=1) == ("{{region}} eu-1 ${incident.service} $5", [])


def test_typed_defaults_must_match_their_type():
    ok = playbook(
        {
            "region": "eu-1",
            "retries": {"type": "integer", "default": 3, "description": "how many times"},
            "ratio": {"type": "number", "default": 0.5},
            "dry": {"type": "boolean", "default": False},
            "name": {"type": "string"},
        }
    )
    assert ok.variable_values() == {"region": "eu-1", "retries": 3, "ratio": 0.5, "dry": False, "name": None}
    assert render_text("{{dry}} {{ratio}} [{{name}}]", context(ok), syntax=2)[0] == "false 0.5 []"
    for spec, why in [
        ({"type": "integer", "default": "3"}, "default '3' is not an integer"),
        ({"type": "integer", "default": True}, "default True is not an integer"),
        ({"type": "boolean", "default": "yes"}, "default 'yes' is not a boolean"),
        ({"type": "number", "default": "0.5"}, "default '0.5' is not a number"),
        ({"type": "string", "default": 5}, "default 5 is not a string"),
        ({"type": "date", "default": "x"}, "type"),
        ({"type": "string", "defualt": "x"}, "defualt"),
    ]:
        with pytest.raises(ValidationError, match=f"(?s)variables.*{why}"):
            playbook({"v": spec})


def test_overrides_are_converted_to_the_declared_type_or_refused():
    pb = playbook({"retries": {"type": "integer", "default": 3}, "dry": {"type": "boolean", "default": False}})
    ctx = context(pb, retries="7", dry="true")
    assert (ctx["retries"], ctx["vars.dry"]) == (7, True)
    with pytest.raises(ValueError, match=r"vars.retries: 'many' is not an integer"):
        context(pb, retries="many")
    with pytest.raises(ValueError, match="vars.regoin: not a variable of this playbook"):
        context(pb, regoin="x")


def test_save_validation_names_the_field_path_of_each_unknown_variable():
    definition = {
        "id": "pb",
        "name": "pb",
        "variables": {"region": "eu-1"},
        "steps": [
            {"id": "a", "agent": "noop"},
            {"id": "b", "agent": "noop"},
            {"id": "c", "agent": "noop", "params": {"target": "{{regoin}}", "hosts": ["{{ vars.hots }}"]}},
        ],
    }
    with pytest.raises(ValidationError) as caught:
        new_playbook(definition)
    message = str(caught.value)
    assert "steps[2].params.target: unknown variable 'regoin'" in message
    assert "steps[2].params.hosts[0]: unknown variable 'vars.hots'" in message
    # A variable may not take a name the incident context holds; a declared name must be a plain name.
    with pytest.raises(ValidationError, match="variables.service_name: clashes"):
        new_playbook(definition | {"steps": definition["steps"][:1], "variables": {"service_name": "x"}})
    # Go templates in commands ({{.Names}}) are not names: left as written, not refused.
    docker = {"id": "a", "agent": "noop", "params": {"cmd": "docker ps --format '{{.Names}}'"}}
    assert new_playbook(definition | {"steps": [docker]}).steps[0].params["cmd"].endswith("'{{.Names}}'")
