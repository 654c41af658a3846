"""Agent templates: the files `agent-monitor agents new` writes, and what the templates page shows.

Two templates, each a directory of text files beside this module (shipped as package data):

- `python`: a pip-installable package whose agent runs inside the worker, declared in the `agent_monitor.agents`
  entry-point group (core/agents.py), with a flit_core pyproject, a README and tests that run the agent the way
  the worker does (activities/agent_testing.py).
- `webhook`: a small HTTP service (standard library + `standardwebhooks`) that verifies our signed requests and
  answers the AgentResult shape, with its registration (`agent.json`, the body of POST /api/agents/webhooks),
  a README and tests that call it the way the webhook_agent activity does.

A file's text is a `string.Template` (`$name`, `${class_name}`; `$$` is a dollar sign) and a path's `__package__`
or `__module__` part the package's or module's name; `render` fills them in. Pure: no writes.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from string import Template as _Text
from typing import Literal, get_args

from core.agents import AGENT_NAME, Capability

Kind = Literal["python", "webhook"]
KINDS: tuple[Kind, ...] = get_args(Kind)
CAPABILITIES: tuple[Capability, ...] = get_args(Capability)
SAMPLE_NAME = "http_probe"
SAMPLE_CAPABILITY: Capability = "investigation"
DESCRIPTION_MAX = 2000  # AgentSpec.description's limit
# Capabilities whose agent acts on something: it POSTs and never runs in a dry run. A remediation also waits for a
# human's approval by default (risk medium); a notification does not (risk low).
_ACTING: frozenset[str] = frozenset({"remediation", "notification"})
_SUFFIX = ".tmpl"  # template files carry it, so that no tool takes them for our own modules


@dataclass(frozen=True)
class TemplateFile:
    path: str  # relative, with forward slashes
    text: str


@dataclass(frozen=True)
class Template:
    """One template as the page shows it: its files rendered for a sample agent."""

    kind: Kind
    title: str
    description: str
    command: str  # the command that scaffolds it
    files: tuple[TemplateFile, ...]


_ABOUT: dict[Kind, tuple[str, str]] = {
    "python": (
        "Python agent package",
        "A package the worker loads through the agent_monitor.agents entry point: an agent class with its spec "
        "(params schema, default risk, dry-run behaviour) and an async run method, tests that run it the way the "
        "worker does, and a flit_core pyproject that builds an offline wheel for an index.",
    ),
    "webhook": (
        "Webhook agent service",
        "An HTTP service that runs where your agent must run (another network, another language's neighbour): it "
        "verifies Agent Monitor's Standard Webhooks signature, does the work and answers the AgentResult JSON; "
        "agent.json is its registration for POST /api/agents/webhooks.",
    ),
}
_DEFAULT_DESCRIPTION = {
    False: "Requests params.url (default: the service's URL) and reports its HTTP status and latency",
    True: "POSTs the incident to params.url (default: the service's URL) and reports the answer",
}


class TemplateError(ValueError):
    """A name, capability or description the templates cannot take (one line)."""


def name_problem(name: str) -> str | None:
    """Why `name` cannot name an agent, or None."""
    if not re.fullmatch(AGENT_NAME, name):
        return f"invalid agent name {name!r}: lowercase letters, digits and _, starting with a letter, at most 63"
    return None


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def variables(name: str, capability: str, *, kind: Kind, description: str = "") -> dict[str, str]:
    """What the template files are filled in with, checked."""
    problem = name_problem(name)
    if problem:
        raise TemplateError(problem)
    if capability not in CAPABILITIES:
        raise TemplateError(f"invalid capability {capability!r}: one of {', '.join(CAPABILITIES)}")
    if kind not in KINDS:
        raise TemplateError(f"invalid template {kind!r}: one of {', '.join(KINDS)}")
    acting = capability in _ACTING
    description = " ".join(description.split()) or _DEFAULT_DESCRIPTION[acting]
    if len(description) > DESCRIPTION_MAX:
        raise TemplateError(f"the description is longer than {DESCRIPTION_MAX} characters")
    stem = name.removesuffix("_agent") or name
    return {
        "name": name,
        "title": _camel(name),
        "capability": capability,
        "dist": f"agent-monitor-{name.replace('_', '-')}",
        "wheel": f"agent_monitor_{name}-0.1.0-py3-none-any.whl",  # what flit_core names the wheel of `dist`
        # The python template's package, the webhook template's module: named after the agent, never a module
        # of ours or of the standard library.
        "package": f"{stem}_agent",
        "module": f"{stem}_webhook",
        "class_name": f"{_camel(stem)}Agent",
        "description": description,
        "sentence": description.rstrip(".") + ".",
        "description_literal": json.dumps(description),  # a string literal in Python, TOML and JSON alike
        "description_shell": shlex.quote(description),
        "risk": "medium" if capability == "remediation" else "low",
        "simulation": "describe" if acting else "read",
        "method": "POST" if acting else "GET",
        "verb": "call" if acting else "check",
        "resolves": str(capability == "investigation"),
    }


def render(kind: Kind, name: str, capability: str, *, description: str = "") -> tuple[TemplateFile, ...]:
    """The files of template `kind` for agent `name`, in path order."""
    values = variables(name, capability, kind=kind, description=description)
    root = resources.files(__package__).joinpath(kind)
    files = []
    for path, source in _sources(root, ""):
        target = path.removesuffix(_SUFFIX).replace("__package__", values["package"])
        target = target.replace("__module__", values["module"])
        files.append(TemplateFile(target, _Text(source).substitute(values)))
    return tuple(sorted(files, key=lambda f: f.path))


def _sources(folder: Traversable, prefix: str) -> list[tuple[str, str]]:
    found = []
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name != "__pycache__":
            found += _sources(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(_SUFFIX):
            found.append((prefix + entry.name, entry.read_text(encoding="utf-8")))
    return found


def templates(name: str = SAMPLE_NAME, capability: Capability = SAMPLE_CAPABILITY) -> list[Template]:
    """Every template, rendered for a sample agent (what the templates page shows)."""
    shown = []
    for kind in KINDS:
        title, description = _ABOUT[kind]
        flag = " --webhook" if kind == "webhook" else ""
        command = f"agent-monitor agents new {name} --capability {capability}{flag}"
        shown.append(Template(kind, title, description, command, render(kind, name, capability)))
    return shown
