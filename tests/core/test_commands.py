"""The command model: COMMAND_ALLOWLIST entries pin a whole argv (fixed words, typed placeholders, no free tail
unless the entry says `{...}`), the env names a step may set, and where it may run. A property test mutates
argvs around each entry the way an attacker would and checks nothing accepted ever leaves the entry's shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from core.commands import FREE_TAIL, CommandNotAllowed, CommandRule, allowed_rule, legacy_warnings, parse_word
from core.settings import SettingsError, load_settings

BIN = Path(sys.prefix) / "bin"
ROOT = "/var/log/agent-monitor-test"
RULES = [
    CommandRule(argv=["systemctl", "restart", "{service}"]),
    CommandRule(argv=["find", f"{{path:{ROOT}}}", "-name", "{re:[a-z0-9*.]{1,40}}", "-delete"]),
    CommandRule(argv=["tar", "-czf", f"{{path:{ROOT}}}", "--", f"{{path:{ROOT}}}"], env=["LANG"]),
    CommandRule(argv=["kubectl", "rollout", "undo", "deployment/{name}"]),  # a fixed word that looks like one
    CommandRule(argv=["/opt/scripts/scale.sh", "{service}", "{int}"], cwd="/opt/scripts"),
]
ATTACKS = ["-exec", "touch", "/tmp/x", ";", "-fprint", "/tmp/out", "--checkpoint-action=exec=sh -c id",
           "--to-command=sh", "-I", "--use-compress-program=sh", "-", "--", "../../../etc/shadow",
           f"{ROOT}/../../../etc", "/etc/passwd", "x; rm -rf /", "$(id)", "", "-delete", "-rf", "web\x00"]  # fmt: skip


def fits(argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> bool:
    try:
        allowed_rule(RULES, argv, env, cwd)
    except CommandNotAllowed:
        return False
    return True


def test_an_entry_pins_the_whole_argv():
    assert fits(["systemctl", "restart", "checkout"])
    for refused in (
        ["systemctl", "restart"],  # too few
        ["systemctl", "restart", "checkout", "payments"],  # nothing may follow
        ["systemctl", "restart", "--now"],  # an option where a value goes
        ["systemctl", "restart", "-H", "evil"],
        ["systemctl", "stop", "checkout"],
        ["systemctl", "restart", "Checkout"],  # {service} is lowercase
        ["/usr/bin/systemctl", "restart", "checkout"],
        ["systemctl", "restart", "a" * 64],
    ):
        assert not fits(refused), refused


def test_the_findings_of_the_review_are_refused():
    """`find DIR -name` once allowed `-exec touch /tmp/x ;` and `-fprint FILE`; `tar -cf FILE` allowed
    `--checkpoint-action=exec=…`."""
    assert fits(["find", ROOT, "-name", "*.log", "-delete"])
    assert not fits(["find", ROOT, "-name", "x", "-exec", "touch", "/tmp/x", ";"])
    assert not fits(["find", ROOT, "-name", "x", "-delete", "-exec", "touch", "/tmp/x", ";"])
    assert not fits(["find", ROOT, "-fprint", "/tmp/out"])
    assert not fits(["find", ROOT, "-name", "-exec", "-delete"])
    archive = f"{ROOT}/a.tgz"
    assert fits(["tar", "-czf", archive, "--", f"{ROOT}/app"])
    assert not fits(["tar", "-czf", archive, "--", f"{ROOT}/app", "--checkpoint-action=exec=touch /tmp/x"])
    assert not fits(["tar", "-czf", "--checkpoint-action=exec=touch /tmp/x", "--", f"{ROOT}/app"])
    assert not fits(["tar", "-czf", "/tmp/a.tgz", "--", f"{ROOT}/app"])  # outside the directory
    assert not fits(["tar", "-czf", archive, "--", f"{ROOT}/../../etc"])


def test_paths_are_checked_with_symlinks_resolved(tmp_path):
    root = tmp_path / "logs"
    root.mkdir()
    (root / "app.log").write_text("x")
    (root / "escape").symlink_to("/etc")
    rules = [CommandRule(argv=["cat", f"{{path:{root}}}"])]
    assert allowed_rule(rules, ["cat", f"{root}/app.log"])
    assert allowed_rule(rules, ["cat", str(root)])
    for outside in (f"{root}/escape/passwd", f"{root}/../x", f"{root}x/app.log", "app.log", "/etc/passwd"):
        with pytest.raises(CommandNotAllowed):
            allowed_rule(rules, ["cat", outside])


def test_a_free_tail_only_when_the_entry_says_so():
    rules = [CommandRule(argv=["/bin/echo", FREE_TAIL])]
    assert allowed_rule(rules, ["/bin/echo"]) and allowed_rule(rules, ["/bin/echo", "-n", "a; b"])
    with pytest.raises(ValidationError, match="only be the last word"):
        CommandRule(argv=["x", FREE_TAIL, "y"])


def test_env_and_cwd_are_the_entrys_say():
    argv = ["/opt/scripts/scale.sh", "checkout", "3"]
    assert fits(argv) and fits(argv, cwd="/opt/scripts")
    assert not fits(argv, env={"LANG": "C"})  # this entry allows no variable
    assert not fits(argv, cwd="/tmp")
    archive = ["tar", "-czf", f"{ROOT}/a.tgz", "--", f"{ROOT}/app"]
    assert fits(archive, env={"LANG": "C.UTF-8"}) and not fits(archive, env={"TAR_OPTIONS": "--to-command=sh"})
    assert not fits(archive, cwd="/")  # no cwd named: steps may not choose one
    with pytest.raises(CommandNotAllowed) as refused:
        allowed_rule(RULES, archive, {"TAR_OPTIONS": "-I sh"})
    assert "env TAR_OPTIONS is not allowed by this entry (its env: LANG)" in str(refused.value)


@pytest.mark.parametrize(
    "name", ["TAR_OPTIONS", "NODE_OPTIONS", "PYTHONSTARTUP", "PERL5OPT", "RUBYOPT", "LESSOPEN", "LUA_INIT",
             "MAKEFLAGS", "GIT_SSH_COMMAND", "CURL_HOME", "WGETRC", "BASH_ENV", "ENV", "LD_PRELOAD", "PATH", "HOME"],
)  # fmt: skip
def test_an_entry_cannot_allow_a_variable_that_runs_code(name):
    with pytest.raises(ValidationError, match=f"{name} can make a program run other code"):
        CommandRule(argv=["x"], env=[name])


def test_the_messages_say_which_entry_came_closest_and_why():
    with pytest.raises(CommandNotAllowed) as tail:
        allowed_rule(RULES, ["find", ROOT, "-name", "x", "-delete", "-exec", "touch", "/tmp/x", ";"])
    assert str(tail.value).endswith("word 6 '-exec' is one too many: the entry pins 5 words")
    with pytest.raises(CommandNotAllowed) as option:
        allowed_rule(RULES, ["systemctl", "restart", "--now"])
    assert "word 3 '--now' a placeholder's value may not start with '-'" in str(option.value)
    with pytest.raises(CommandNotAllowed) as other:
        allowed_rule(RULES, ["sh", "-c", "id"])
    assert "has no entry for 'sh'" in str(other.value)


def test_entries_are_read_in_both_forms_and_plain_lists_warned_about():
    given = [["/opt/old.sh", "go"], {"argv": ["systemctl", "restart", "{service}"], "env": ["LANG"]}]
    loaded = load_settings(command_allowlist=given).command_allowlist
    assert [(r.argv, r.legacy) for r in loaded] == [(["/opt/old.sh", "go"], True),
                                                    (["systemctl", "restart", "{service}"], False)]  # fmt: skip
    (warning,) = legacy_warnings(loaded)
    assert warning.startswith('COMMAND_ALLOWLIST entry ["/opt/old.sh", "go"] is a plain list: it now allows exactly')
    assert '{"argv": ["/opt/old.sh", "go", "{service}"]}' in warning
    for bad, says in (
        ([{"argv": ["{service}"]}], "the program (the first word) must be fixed"),
        ([{"argv": ["x", "{re:(}"]}], "not a regular expression"),
        ([{"argv": ["x", "{path:relative}"]}], "must be absolute"),
        ([{"argv": ["x"], "shell": True}], "SHELL: Extra inputs are not permitted"),
        ([{"argv": ["x"], "cwd": "tmp"}], "cwd must be an absolute directory"),
        ([[]], "at least 1 item"),
    ):
        with pytest.raises(SettingsError, match="COMMAND_ALLOWLIST") as err:
            load_settings(command_allowlist=bad)
        assert says in str(err.value), (bad, str(err.value))


def test_a_bad_entry_in_the_environment_stops_the_worker_with_one_line():
    env = {**os.environ, "COMMAND_ALLOWLIST": json.dumps([{"argv": ["tar", "{...}"], "env": ["TAR_OPTIONS"]}])}
    done = subprocess.run([str(BIN / "agent-monitor"), "worker"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid configuration: COMMAND_ALLOWLIST.0.ENV: Value error, TAR_OPTIONS can make a program run "
        "other code; it cannot be allowed (got ['TAR_OPTIONS'])"
    ]


def _valid_value(word: str) -> str:
    kind = parse_word(word).kind
    return {"service": "checkout", "name": "web.service", "int": "3", "path": f"{ROOT}/app", "re": "app.log",
            "fixed": word}[kind]  # fmt: skip


def _valid_argv(rule: CommandRule) -> list[str]:
    return [_valid_value(word) for word in rule.argv if word != FREE_TAIL]


mutation = st.tuples(st.sampled_from(["insert", "replace", "append", "drop"]), st.integers(0, 8),
                     st.sampled_from(ATTACKS) | st.text(max_size=12))  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(rule_index=st.integers(0, len(RULES) - 1), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_no_argv_around_an_entry_escapes_it(rule_index, mutations):
    rule = RULES[rule_index]
    argv = _valid_argv(rule)
    assert allowed_rule([rule], argv, cwd=rule.cwd) is rule
    for op, at, token in mutations:
        at = min(at, len(argv))
        if op == "insert":
            argv.insert(at, token)
        elif op == "replace" and at < len(argv):
            argv[at] = token
        elif op == "append":
            argv.append(token)
        elif op == "drop" and at < len(argv) and len(argv) > 1:
            del argv[at]
    try:
        allowed_rule([rule], argv)
    except CommandNotAllowed:
        return
    # Accepted: it must have the entry's shape exactly, word for word.
    words = [word for word in rule.argv if word != FREE_TAIL]
    assert len(argv) == len(words)
    for word, value in zip(words, argv, strict=True):
        if parse_word(word).kind == "fixed":
            assert value == word
        else:
            assert not value.startswith("-") and "\x00" not in value and value not in (";", "")
            if parse_word(word).kind == "path":
                assert os.path.realpath(value).startswith(ROOT + "/") or os.path.realpath(value) == ROOT
    assert Path(argv[0]).name == Path(rule.argv[0]).name


def test_settings_hold_parsed_entries():
    parsed = TypeAdapter(list[CommandRule]).validate_python([["a"], {"argv": ["b", "{int}"]}])
    assert parsed == [CommandRule(argv=["a"], legacy=True), CommandRule(argv=["b", "{int}"])]
