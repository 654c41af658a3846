"""The command model of remediate_command: COMMAND_ALLOWLIST entries pin a whole argv, as the operator wrote it.

An entry is fixed words plus typed placeholders, e.g. `["systemctl", "restart", "{service}"]`; an argv matches
when it has exactly as many words, each fixed word equal and each placeholder's value of its type. Nothing may
follow unless the entry ends with `{...}` (a free tail, said explicitly). No placeholder value may start with
`-`, so a value can never become an option (write `--` before placeholders too, where the program takes it).
Each entry names the environment variables a step may set (none by default) and where it may run (`cwd`).

Placeholders:
- `{service}`: `^[a-z0-9][a-z0-9-]{0,62}$`, a service or host label.
- `{name}`: `^[A-Za-z0-9][A-Za-z0-9._@:+=-]{0,127}$`, e.g. a systemd unit, a release, a Kubernetes object.
- `{int}`: `^[0-9]{1,9}$`.
- `{path:/var/log}`: an absolute path that, symlinks resolved, lies inside the directory (realpath, at run time).
- `{re:REGEX}`: the whole value matches REGEX (and does not start with `-`).
- `{...}`: only last: any further words, options included (avoid; it gives back what pinning takes away).

A plain list (the format before December 2026: an argv prefix with a free tail) is read as the whole argv, with
no tail; the worker warns at start-up about each such entry (`legacy_warnings`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FREE_TAIL = "{...}"
_PLACEHOLDER = re.compile(r"^\{(service|name|int|path|re)(?::(.+))?\}$", re.DOTALL)
_TYPES = {
    "service": re.compile(r"[a-z0-9][a-z0-9-]{0,62}"),
    "name": re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+=-]{0,127}"),
    "int": re.compile(r"[0-9]{1,9}"),
}
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,99}")
# Never settable, whatever an entry says: they make a loader, shell, interpreter or common tool run other code
# than the allowlisted command, or read configuration that does. An entry naming one is refused at start-up.
NEVER_ENV = re.compile(
    r"PATH|IFS|ENV|BASH_ENV|SHELLOPTS|BASHOPTS|PS4|PROMPT_COMMAND|GCONV_PATH|GLIBC_TUNABLES|LD_[A-Z0-9_]*"
    r"|DYLD_[A-Z0-9_]*|MALLOC_[A-Z0-9_]*|HOME|XDG_[A-Z0-9_]*|TMPDIR|NODE_OPTIONS|NODE_PATH|JAVA_TOOL_OPTIONS"
    r"|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|PYTHON[A-Z0-9_]*|PERL5[A-Z0-9_]*|PERLLIB|RUBYOPT|RUBYLIB|LUA_INIT[A-Z0-9_]*"
    r"|LUA_PATH[A-Z0-9_]*|LUA_CPATH[A-Z0-9_]*|TAR_OPTIONS|LESSOPEN|LESSCLOSE|LESSKEY|MAKEFLAGS|MFLAGS|MAKEFILES"
    r"|GIT_[A-Z0-9_]*|CURL_HOME|WGETRC|SSH_[A-Z0-9_]*|OPENSSL_[A-Z0-9_]*|KUBECONFIG|PAGER|EDITOR|VISUAL|BROWSER"
    r"|SYSTEMD_[A-Z0-9_]*|GCONV_[A-Z0-9_]*|NLSPATH|LOCPATH|HOSTALIASES|RESOLV_[A-Z0-9_]*|PS1|CDPATH|GLOBIGNORE"
)


class CommandNotAllowed(Exception):
    """An argv, env or cwd that no entry allows; the message says which entry came closest and why."""


@dataclass(frozen=True)
class Word:
    """One word of an entry: fixed (`kind` "fixed", `arg` the word) or a placeholder."""

    kind: str
    arg: str = ""

    def problem(self, value: str) -> str | None:
        """Why value does not fit this word, or None."""
        if self.kind == "fixed":
            return None if value == self.arg else f"must be {self.arg!r}"
        if value.startswith("-"):
            return "a placeholder's value may not start with '-' (it would be read as an option)"
        if "\x00" in value:
            return "a NUL character"
        if self.kind in _TYPES:
            return (
                None
                if _TYPES[self.kind].fullmatch(value)
                else f"is not a {{{self.kind}}} ({_TYPES[self.kind].pattern})"
            )
        if self.kind == "re":
            return None if re.fullmatch(self.arg, value) else f"does not match {self.arg!r}"
        return _path_problem(value, self.arg)

    @property
    def text(self) -> str:
        return self.arg if self.kind == "fixed" else f"{{{self.kind}" + (f":{self.arg}" if self.arg else "") + "}"


def _path_problem(value: str, root: str) -> str | None:
    if not value.startswith("/"):
        return "must be an absolute path"
    real = os.path.realpath(value)
    base = os.path.realpath(root)
    if real != base and not real.startswith(base.rstrip("/") + "/"):
        return f"is not inside {root} (it resolves to {real})"
    return None


def parse_word(text: str) -> Word:
    match = _PLACEHOLDER.match(text)
    if match is None:
        return Word("fixed", text)
    kind, arg = match.group(1), match.group(2) or ""
    if kind in ("path", "re") and not arg:
        raise ValueError(f"{text!r}: {{{kind}:…}} needs its argument, e.g. {{path:/var/log}} or {{re:[a-z]+}}")
    if kind not in ("path", "re") and arg:
        raise ValueError(f"{text!r}: {{{kind}}} takes no argument")
    if kind == "path" and not (arg.startswith("/") and len(arg) > 1):
        raise ValueError(f"{text!r}: the directory must be absolute and not /")
    if kind == "re":
        try:
            re.compile(arg)
        except re.error as err:
            raise ValueError(f"{text!r}: not a regular expression ({err})") from None
    return Word(kind, arg)


class CommandRule(BaseModel):
    """One COMMAND_ALLOWLIST entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    argv: list[str] = Field(min_length=1, max_length=100)
    env: list[str] = Field(default_factory=list, max_length=50)
    cwd: str | None = None  # an absolute directory, or {path:/dir}; None: steps may not choose one
    legacy: bool = False  # written as a plain list (an argv prefix before December 2026)

    @model_validator(mode="before")
    @classmethod
    def _plain_list(cls, value: Any) -> Any:
        return {"argv": value, "legacy": True} if isinstance(value, list) else value

    @field_validator("argv")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        if any(not word or "\x00" in word for word in value):
            raise ValueError("argv words must be non-empty strings without NUL")
        if _PLACEHOLDER.match(value[0]) or value[0] == FREE_TAIL:
            raise ValueError("the program (the first word) must be fixed")
        if FREE_TAIL in value[:-1]:
            raise ValueError("{...} may only be the last word")
        for word in value:
            if word != FREE_TAIL:
                parse_word(word)
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name (^[A-Z_][A-Z0-9_]*$)")
            if NEVER_ENV.fullmatch(name):
                raise ValueError(f"{name} can make a program run other code; it cannot be allowed")
        return value

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/") and parse_word(value).kind != "path":
            raise ValueError("cwd must be an absolute directory or {path:/dir}")
        return value

    @property
    def words(self) -> list[Word]:
        return [parse_word(word) for word in self.argv if word != FREE_TAIL]

    @property
    def free_tail(self) -> bool:
        return self.argv[-1] == FREE_TAIL

    def argv_problem(self, argv: list[str]) -> tuple[int, str] | None:
        """None if argv fits; else how many leading words fit and what is wrong."""
        words = self.words
        for index, (word, value) in enumerate(zip(words, argv, strict=False)):
            problem = word.problem(value)
            if problem:
                return index, f"word {index + 1} {value!r} {problem}"
        if len(argv) < len(words):
            return len(argv), f"it has {len(argv)} words; the entry needs {len(words)}"
        if len(argv) > len(words) and not self.free_tail:
            extra = argv[len(words)]
            return len(words), f"word {len(words) + 1} {extra!r} is one too many: the entry pins {len(words)} words"
        return None

    def env_problem(self, env: dict[str, str]) -> str | None:
        for name in sorted(env):
            if name not in self.env:
                allowed = ", ".join(self.env) or "none"
                return f"env {name} is not allowed by this entry (its env: {allowed})"
            if "\x00" in env[name]:
                return f"env {name} has a NUL character"
        return None

    def cwd_problem(self, cwd: str | None) -> str | None:
        if cwd is None:
            return None
        if self.cwd is None:
            return "cwd is not allowed by this entry (it names none)"
        word = parse_word(self.cwd)
        if word.kind == "fixed":
            return None if os.path.realpath(cwd) == os.path.realpath(self.cwd) else f"cwd must be {self.cwd}"
        problem = _path_problem(cwd, word.arg)
        return None if problem is None else f"cwd {problem}"


def _closest(rules: list[CommandRule], argv: list[str]) -> tuple[CommandRule, str] | None:
    best: tuple[int, CommandRule, str] | None = None
    for rule in rules:
        problem = rule.argv_problem(argv)
        if problem is not None and (best is None or problem[0] > best[0]):
            best = (problem[0], rule, problem[1])
    return None if best is None or best[0] == 0 else (best[1], best[2])


def allowed_rule(
    rules: list[CommandRule], argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> CommandRule:
    """The first entry that allows this argv with this env and cwd; else CommandNotAllowed saying why."""
    fitting = [rule for rule in rules if rule.argv_problem(argv) is None]
    for rule in fitting:
        if rule.env_problem(env or {}) is None and rule.cwd_problem(cwd) is None:
            return rule
    if fitting:
        rule = fitting[0]
        problem = rule.env_problem(env or {}) or rule.cwd_problem(cwd)
        raise CommandNotAllowed(f"command {argv!r} fits the entry {rule.argv!r}, but {problem}")
    closest = _closest(rules, argv)
    if closest is None:
        programs = sorted({rule.argv[0] for rule in rules})
        raise CommandNotAllowed(f"command {argv!r} is not allowlisted: COMMAND_ALLOWLIST has no entry for "
                                f"{argv[0]!r} (its programs: {', '.join(programs)})")  # fmt: skip
    rule, problem = closest
    raise CommandNotAllowed(f"command {argv!r} is not allowlisted: closest entry {rule.argv!r}: {problem}")


def legacy_warnings(rules: list[CommandRule]) -> list[str]:
    """One line per entry still written as a plain list: what it allows now, and how to write it."""
    return [
        f"COMMAND_ALLOWLIST entry {json.dumps(rule.argv)} is a plain list: it now allows exactly that argv, no "
        "further arguments (before December 2026 it allowed any). To allow arguments, write it with placeholders, "
        f"e.g. {json.dumps({'argv': [*rule.argv, '{service}']})} (docs/security.md)"
        for rule in rules
        if rule.legacy
    ]
