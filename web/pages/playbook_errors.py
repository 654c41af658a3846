"""The playbook editor's problems at their fields: pydantic's locations (`steps.2.when` → the input `s2.when`), the
playbook rules' "step x: why" messages and part A's paths (`steps[2].params.target`, `variables.region`) placed
next to the input they are about, anything else listed at the top of the form."""

from __future__ import annotations

import re

from pydantic import ValidationError

from web.pages.playbook_form import GENERAL, PLAYBOOK_FIELDS, RETRY_FIELDS, STEP_FIELDS, EditorForm
from web.schema_form import field_of

_STEP_PROBLEM = re.compile(r"^step (?P<id>[^\s:]*): (?P<why>.*)$", re.S)
_PROBLEM_FIELD = (
    ("duplicate id", "id"),
    ("unknown agent", "agent"),
    ("condition", "when"),
    ("below agent", "risk"),
    ("join", "join"),
    ("depends on", "depends_on"),
    ("dependency", "depends_on"),
)


def _step_index(editor: EditorForm, step_id: str, *, last: bool = False) -> int | None:
    found = [i for i, s in enumerate(editor.steps) if s.id == step_id]
    return (found[-1] if last else found[0]) if found else None


def place_problem(editor: EditorForm, problem: str) -> None:
    """Put one of the playbook rules' messages ("step x: why") next to its field, else at the top."""
    problem = problem.strip().removeprefix("Value error, ")
    found = _STEP_PROBLEM.match(problem)
    if found:
        why = found["why"]
        index = _step_index(editor, found["id"], last="duplicate id" in why)
        if index is not None:
            step = editor.steps[index]
            if why.startswith(("params", "param '")):
                param = field_of(why, step.params)
                name: str | None = f"p.{param}" if param else "params"
            else:
                name = next((f for word, f in _PROBLEM_FIELD if word in why), None)
            if name == "join" and "count" in why and step.join == "at_least":
                name = "join_count"
            if name is not None:
                _add(editor, f"s{index}.{name}", problem)
                return
    key = _path_key(editor, problem.split(":", 1)[0])
    if key is not None:
        _add(editor, key, problem)
        return
    editor.general.append(problem)


_STEP_PATH = re.compile(r"^steps\[(\d+)\]\.(instructions|impact|params)(?:\.([^.\[\]]+))?")


def _path_key(editor: EditorForm, head: str) -> str | None:
    """The input a problem's path is about: `steps[2].params.target`, `variables.region`, `owner_team`, …"""
    if head in ("id", "name", "incident_type", "description", "message", "owner_team", "visibility"):
        return head
    found = _STEP_PATH.match(head)
    if found and int(found[1]) < len(editor.steps):
        i, where, param = int(found[1]), found[2], found[3]
        if where != "params":
            return f"s{i}.{where}"
        names = {f.name for f in editor.steps[i].params}
        return f"s{i}.p.{param}" if param in names else f"s{i}.params"
    if head.startswith("variables."):
        j = next((k for k, r in enumerate(editor.variables) if r.name == head.removeprefix("variables.")), None)
        return f"v{j}.name" if j is not None else None
    return None


def _add(editor: EditorForm, key: str, message: str) -> None:
    editor.errors[key] = f"{editor.errors[key]}; {message}" if key in editor.errors else message


def split_problems(message: str) -> list[str]:
    """The playbook rules join their problems with "; ": one per step problem (a message may hold "; " itself)."""
    message = message.removeprefix("playbook: ")
    known = message.split(" (known: ", 1)[0] if "unknown agent" in message else message
    return [
        part for part in re.split(r"; (?=(?:step [^\s:]*|steps\[\d+\][^\s:]*|variables\.[^\s:]*): )", known) if part
    ]


def place_validation_errors(editor: EditorForm, err: ValidationError) -> None:
    """pydantic's errors at their locations: ("steps", 2, "when") → s2.when, ("name",) → name."""
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        message = str(item["msg"]).removeprefix("Value error, ")
        if not loc:  # the model's own rules: "step x: why; step y: why"
            for problem in split_problems(message):
                place_problem(editor, problem)
            continue
        if loc == ["variables"]:  # "region: default 'x' is not an integer"
            name = message.split(":", 1)[0]
            j = next((k for k, r in enumerate(editor.variables) if r.name == name), None)
            if j is not None:
                _add(editor, f"v{j}.default", f"variable {message}")
                continue
        _add(editor, _loc_key(editor, loc), f"{'.'.join(loc)}: {message}")


def _loc_key(editor: EditorForm, loc: list[str]) -> str:
    head = loc[0]
    if head == "steps" and len(loc) >= 3 and loc[1].isdigit():
        i, rest = int(loc[1]), loc[2:]
        if rest[0] == "join":
            return f"s{i}.join_count" if rest[1:2] == ["count"] else f"s{i}.join"
        if rest[0] == "retry" and len(rest) > 1:
            return f"s{i}.retry.{rest[1]}"
        if rest[0] == "approvers":
            return f"s{i}.approvers_teams" if rest[1:2] == ["teams"] else f"s{i}.approvers_users"
        if rest[0] == "params":
            step = editor.steps[i] if i < len(editor.steps) else None
            names = {f.name for f in step.params} if step else set()
            if len(rest) > 1 and rest[1] in names:
                return f"s{i}.p.{rest[1]}"
            return f"s{i}.params"
        if rest[0] in STEP_FIELDS:
            return f"s{i}.{rest[0]}"
        return f"s{i}.more"
    if head == "steps":
        return GENERAL
    if head == "approvers":
        return "approvers_teams" if loc[1:2] == ["teams"] else "approvers_users"
    if head == "variables" and len(loc) >= 2:
        j = next((k for k, r in enumerate(editor.variables) if r.name == loc[1]), None)
        return f"v{j}.default" if j is not None else "variables"
    return head if head in PLAYBOOK_FIELDS else "more"


def shown_keys(editor: EditorForm) -> set[str]:
    """Every input name the editor page shows an error beside."""
    keys = {"id", "name", "incident_type", "description", "more", "message", "owner_team", "visibility"}
    keys |= {"approvers_users", "approvers_teams"}
    keys |= {f"v{j}.{k}" for j in range(len(editor.variables)) for k in ("name", "default")}
    own = ("id", "agent", "instructions", "risk", "impact", "approval_timeout_seconds", "approvers_users",
           "approvers_teams", "depends_on", "join", "join_count", "when", "timeout_seconds", "heartbeat_seconds",
           "on_failure", "more", "params")  # fmt: skip
    for i, step in enumerate(editor.steps):
        keys |= {f"s{i}.{k}" for k in own}
        keys |= {f"s{i}.retry.{k}" for k in RETRY_FIELDS}
        keys |= {f"s{i}.p.{f.name}" for f in step.params}
    return keys


def settle_errors(editor: EditorForm) -> None:
    """Errors whose field the page does not show go to the top; the params fields get theirs."""
    shown = shown_keys(editor)
    for key in [k for k in editor.errors if k not in shown]:
        editor.general.append(editor.errors.pop(key))
    for i, step in enumerate(editor.steps):
        for item in step.params:
            item.error = editor.errors.get(f"s{i}.p.{item.name}", "")
