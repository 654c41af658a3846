"""Playbooks to and from files: JSON or YAML, one playbook or a bundle (`{"playbooks": [...]}`, or a list).

Exports are canonical: the definition as stored (every field, in the model's order), so export → import → export
gives the same bytes. Imports read YAML with PyYAML's safe constructors (libyaml's parser when PyYAML has it): no
object tags, and no aliases either (a small file must not expand into a huge one). Everything is validated first
and every problem reported with its path (`playbooks[0].steps[2].when: …`); then all of it is saved in the caller's
transaction, or nothing. A playbook whose id and version are already stored with the same definition is skipped;
any other is saved as its id's next version (services.playbooks.save_playbook: edit rights, agents, audit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, select

from core.audit import Actor, record_audit
from core.errors import DomainError, Invalid, TooLarge
from core.playbook import Playbook, PlaybookProblems, new_playbook, risk_floor_problem, with_agent_defaults
from core.tables import PlaybookVersion
from services.agents import all_agent_specs
from services.playbook_sharing import Caller
from services.playbooks import save_playbook

Format = Literal["json", "yaml"]
FORMATS: tuple[Format, ...] = ("json", "yaml")
IMPORT_MAX_BYTES = 1_000_000  # as the app's request body limit (api/errors.MAX_BODY_BYTES)
BUNDLE_MAX = 200
MAX_DEPTH = 64  # a bundle → playbook → steps → step → params → … : far more than any playbook needs
IMPORT_MESSAGE = "imported"


class ImportProblems(Invalid):
    """The file cannot be imported: every problem, each `path: why`. Nothing was saved."""

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}: {shown}")
        self.problems = problems


class ImportedPlaybook(BaseModel):
    id: str
    version: int  # as in the file
    status: Literal["created", "new_version", "skipped"]
    saved_as: int | None  # the version stored (None: skipped)
    reason: str


class ImportResult(BaseModel):
    playbooks: list[ImportedPlaybook]

    @property
    def saved(self) -> int:
        return sum(1 for p in self.playbooks if p.saved_as is not None)


# Export ------------------------------------------------------------------------------------------------------------


def export_playbooks(playbooks: list[Playbook], fmt: Format, *, bundle: bool | None = None) -> str:
    """The playbooks as text: one playbook alone unless `bundle` (default: a bundle unless exactly one)."""
    definitions = [p.model_dump(mode="json") for p in playbooks]
    as_bundle = len(definitions) != 1 if bundle is None else bundle
    data: Any = {"playbooks": definitions} if as_bundle else definitions[0]
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        dumped: str = yaml.dump(
            data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120
        )
        return dumped
    raise Invalid(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")


# libyaml when PyYAML was built with it (3-4 times faster), the same safe constructors and representers either way.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_SafeDumper):  # type: ignore[misc]  # PyYAML ships no types
    """Multi-line text (instructions) as a `|` block, readable and diffable; PyYAML falls back to a quoted
    scalar where a block cannot hold the text exactly (trailing spaces, control characters)."""


def _text(dumper: Any, value: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


# Import ------------------------------------------------------------------------------------------------------------


def _load_yaml(text: str) -> Any:
    """yaml.safe_load's constructors (no object tags), refusing aliases (`*name`) first: a billion-laughs file is a
    422, not an expansion."""
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a playbook file", event.start_mark
            )
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 (SafeLoader or CSafeLoader: safe_load's constructors)


def parse_document(text: str, fmt: Format) -> Any:
    """The file's data. Invalid (422) when it does not parse; TooLarge (413) over IMPORT_MAX_BYTES."""
    size = len(text.encode())
    if size > IMPORT_MAX_BYTES:
        raise TooLarge(f"body: {size} bytes; an import is at most {IMPORT_MAX_BYTES} bytes")
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "yaml":
            data = _load_yaml(text)
        else:
            raise Invalid(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    except json.JSONDecodeError as err:
        raise Invalid(f"body: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except yaml.YAMLError as err:
        raise Invalid(f"body: not valid YAML: {_yaml_error(err)}") from None
    except RecursionError:
        raise Invalid(f"body: nested deeper than {MAX_DEPTH} levels") from None
    if problem := nesting_problem(data):
        raise Invalid(f"body: {problem}")
    return data


def nesting_problem(data: Any, limit: int = 0) -> str | None:
    """Why the data is nested too deeply to be a playbook (every walk over it recurses), or None."""
    limit = limit or MAX_DEPTH
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return f"nested deeper than {limit} levels"
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


def _yaml_error(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.MarkedYAMLError):
        where = f" at line {err.problem_mark.line + 1} column {err.problem_mark.column + 1}" if err.problem_mark else ""
        return f"{err.problem or err.context or 'cannot be read'}{where}"[:300]
    return str(err)[:300]


def definitions_of(data: Any) -> list[tuple[str, Any]]:
    """(path prefix, definition) of each playbook in the file: a playbook, {"playbooks": [...]} or a list."""
    if isinstance(data, Mapping) and "playbooks" in data:
        extra = sorted(str(k) for k in data if k != "playbooks")
        if extra:
            raise ImportProblems([f"{key}: a bundle has only `playbooks`" for key in extra])
        items = data["playbooks"]
        if not isinstance(items, list):
            raise ImportProblems(["playbooks: must be a list of playbooks"])
    elif isinstance(data, list):
        items = data
    elif isinstance(data, Mapping):
        return [("", data)]
    else:
        raise ImportProblems(["body: must be a playbook, a list of playbooks or {playbooks: [...]}"])
    if not items:
        raise ImportProblems(["playbooks: the bundle is empty"])
    if len(items) > BUNDLE_MAX:
        raise ImportProblems([f"playbooks: at most {BUNDLE_MAX} in one import (got {len(items)})"])
    return [(f"playbooks[{i}].", item) for i, item in enumerate(items)]


def validate_definitions(session: Session, data: Any) -> list[tuple[str, Playbook]]:
    """Every playbook of the file, or ImportProblems naming every problem of all of them."""
    problems: list[str] = []
    valid: list[tuple[str, Playbook]] = []
    agents = all_agent_specs(session)
    seen: dict[tuple[str, int], str] = {}
    for prefix, definition in definitions_of(data):
        if not isinstance(definition, Mapping):
            problems.append(f"{prefix.rstrip('.') or 'body'}: must be a playbook (an object)")
            continue
        try:
            playbook = new_playbook(definition)
        except ValidationError as err:
            problems += [prefix + p for p in problems_of(err, definition) + _unknown_agents(definition, agents)]
            continue
        own = [prefix + p for p in _agent_problems(playbook, agents)]
        key = (playbook.id, playbook.version)
        if key in seen:
            own.append(f"{prefix}version: {playbook.id} version {playbook.version} is also {seen[key]}")
        seen.setdefault(key, prefix.rstrip(".") or "body")
        problems += own
        if not own:
            valid.append((prefix, playbook))
    if problems:
        raise ImportProblems(problems)
    return valid


def import_playbooks(
    *, session: Session, actor: Actor, text: str, fmt: Format, principal: Caller | None = None
) -> ImportResult:
    """Validate the file, then save each playbook (skipping an identical id+version) in the caller's transaction;
    ImportProblems (and nothing saved: the caller rolls back) when anything is wrong."""
    playbooks = validate_definitions(session, parse_document(text, fmt))
    agents = all_agent_specs(session)
    results: list[ImportedPlaybook] = []
    problems: list[str] = []
    for prefix, playbook in playbooks:
        stored = session.exec(
            select(PlaybookVersion).where(
                PlaybookVersion.playbook_id == playbook.id, PlaybookVersion.version == playbook.version
            )
        ).first()
        if stored is not None and _same(stored.definition, with_agent_defaults(playbook, agents)):
            reason = f"{playbook.id} version {playbook.version} is already stored with this definition"
            results.append(ImportedPlaybook(**_ids(playbook), status="skipped", saved_as=None, reason=reason))
            continue
        existed = session.exec(select(PlaybookVersion.id).where(PlaybookVersion.playbook_id == playbook.id)).first()
        try:
            saved = save_playbook(
                session=session, actor=actor, playbook=playbook, message=IMPORT_MESSAGE, principal=principal
            )
        except DomainError as err:
            problems.append(f"{prefix}{err}" if ": " in str(err) else f"{prefix}id: {err}")
            continue
        reason = (
            f"stored version {playbook.version} differs: saved as version {saved.version}"
            if stored is not None
            else f"saved as version {saved.version}"
        )
        status: Literal["created", "new_version"] = "new_version" if existed is not None else "created"
        results.append(ImportedPlaybook(**_ids(playbook), status=status, saved_as=saved.version, reason=reason))
    if problems:
        raise ImportProblems(problems)
    record_audit(
        session,
        actor=actor,
        action="playbook.import",
        target_type="playbook",
        target_id=",".join(dict.fromkeys(p.id for p in results))[:200],
        after={"format": fmt, "playbooks": [p.model_dump() for p in results]},
    )
    return ImportResult(playbooks=results)


def _ids(playbook: Playbook) -> dict[str, Any]:
    return {"id": playbook.id, "version": playbook.version}


def _same(stored: Mapping[str, Any], playbook: Playbook) -> bool:
    """Whether a stored definition is this one (read as a Playbook, so a field added since reads as its default)."""
    try:
        old = Playbook.model_validate(stored).model_dump(mode="json")
    except ValidationError:
        return False
    return old == playbook.model_dump(mode="json")


def _unknown_agents(definition: Mapping[str, Any], agents: Mapping[str, Any]) -> list[str]:
    """The steps naming an agent nobody provides, in a definition that is invalid for other reasons too."""
    steps = definition.get("steps")
    return [
        f"steps[{index}].agent: unknown agent {step['agent']!r}"
        for index, step in enumerate(steps if isinstance(steps, list) else [])
        if isinstance(step, Mapping) and isinstance(step.get("agent"), str) and step["agent"] not in agents
    ]


def _agent_problems(playbook: Playbook, agents: Mapping[str, Any]) -> list[str]:
    problems = []
    for index, step in enumerate(playbook.steps):
        spec = agents.get(step.agent)
        if spec is None:
            problems.append(f"steps[{index}].agent: unknown agent {step.agent!r}")
            continue
        if problem := spec.params_problem(step.params):
            problems.append(f"steps[{index}].{problem}")
        if problem := risk_floor_problem(step, spec.default_risk):
            problems.append(f"steps[{index}].risk: {problem.partition(': ')[2]}")
    return problems


def problems_of(err: ValidationError, definition: Mapping[str, Any]) -> list[str]:
    """pydantic's errors as `path: why`; the playbook-wide rules (PlaybookProblems) one by one, on their step."""
    problems = []
    for item in err.errors():
        found = (item.get("ctx") or {}).get("error")
        if isinstance(found, PlaybookProblems):
            problems += [_on_step(p, definition) for p in found.problems]
            continue
        where = _path(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if where == "variables" and (named := re.match(r"^([^\s:]+): (.*)$", message, re.DOTALL)):
            where, message = f"variables.{named.group(1)}", named.group(2)  # parse_variables names the variable
        problems.append(f"{where}: {message}" if where else message)
    return problems


def _path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_STEP_PROBLEM = re.compile(r"^step ([a-z][a-z0-9_]*): (.*)$", re.DOTALL)
_FIELD_OF = (("condition", "when"), ("join", "join"), ("depend", "depends_on"), ("duplicate id", "id"))


def _on_step(problem: str, definition: Mapping[str, Any]) -> str:
    """`step check: condition …` → `steps[2].when: condition …` (the step's index in the file)."""
    match = _STEP_PROBLEM.match(problem)
    if not match:
        return problem
    step_id, why = match.groups()
    steps = definition.get("steps") or []
    index = next((i for i, s in enumerate(steps) if isinstance(s, Mapping) and s.get("id") == step_id), None)
    if index is None:
        return problem
    field = next((name for marker, name in _FIELD_OF if marker in why), None)
    return f"steps[{index}]{'.' + field if field else ''}: {why}"
