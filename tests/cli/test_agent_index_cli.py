"""`agent-monitor agents index keygen | add | sign | check` as an index publisher runs them, on real wheels."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner, Result

from cli.agent_index import index_app
from core.catalogue import IndexSource, parse_index, verify_index
from tests.agent_indexes import agent_wheel, sha256_of
from tests.wheels import build_wheel

ENV = {"OUTBOUND_ALLOW_LOOPBACK": "false", "AGENT_INDEXES": ""}


def index_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(index_app, [str(arg) for arg in args], env=ENV)


def test_publish_an_index_add_wheels_sign_it_and_check_it(tmp_path):
    root = tmp_path / "acme"
    wheels = root / "wheels"
    key = tmp_path / "index-key.pem"

    made = index_cli("keygen", key)
    assert made.exit_code == 0, made.output
    public_key = made.stdout.strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    IndexSource(source=str(root), public_key=public_key)  # a key the settings accept

    first = agent_wheel(wheels, "restart_pod", "1.0.0")
    added = index_cli(
        "add", root, first, "--name", "restart_pod", "--capability", "remediation", "--risk", "medium",
        "--description", "Restarts a pod", "--requires", ">=0.1,<1", "--changelog", "First release",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    listed = "acme-restart-pod, wheels/acme_restart_pod-1.0.0-py3-none-any.whl"
    assert added.stdout == f"{root}/index.json: restart_pod 1.0.0 added ({listed})\n"
    second = agent_wheel(wheels, "restart_pod", "1.10.0")
    assert index_cli("add", root, second, "--name", "restart_pod", "--capability", "remediation").exit_code == 0
    logs = agent_wheel(wheels, "log_search", "0.2.0")
    assert index_cli("add", root, logs, "--name", "log_search", "--capability", "investigation").exit_code == 0

    document = json.loads((root / "index.json").read_text())
    assert document["format"] == "agent-monitor-index/1" and document["name"] == "acme"
    assert [agent["name"] for agent in document["agents"]] == ["log_search", "restart_pod"]  # sorted
    restart = document["agents"][1]
    assert restart["description"] == "Restarts a pod" and restart["capabilities"] == ["remediation"]
    newest, oldest = restart["versions"]  # newest first, as versions (1.10 after 1.0)
    assert (newest["version"], oldest["version"]) == ("1.10.0", "1.0.0")
    assert newest["package"] == {
        "name": "acme-restart-pod",
        "url": "wheels/acme_restart_pod-1.10.0-py3-none-any.whl",
        "sha256": sha256_of(second),
    }
    # A new version keeps what the agent runs on and how it is used, not the older one's release notes.
    assert (newest["default_risk"], newest["requires"], "changelog" in newest) == ("medium", ">=0.1,<1", False)
    assert oldest["changelog"] == "First release"
    assert parse_index((root / "index.json").read_bytes(), index_name="acme").problems == ()

    signed = index_cli("sign", root, "--key", key)
    assert signed.exit_code == 0, signed.output
    signature = (root / "index.json.sig").read_bytes()
    verify_index((root / "index.json").read_bytes(), IndexSource(source=str(root), public_key=public_key), signature)

    checked = index_cli("check", root, "--public-key", public_key)
    assert (checked.exit_code, checked.stdout) == (0, f"{root}/index.json: 2 agents, 0 problems\n")

    # Rebuilding a version's wheel updates its entry; the signature is now stale, and says so.
    rebuilt_entry = {"agent_monitor.agents": {"restart_pod": "acme_restart_pod:Agent"}}
    rebuilt = build_wheel(
        wheels, "acme-restart-pod", "1.10.0", {"acme_restart_pod/__init__.py": "# v2\n"}, rebuilt_entry
    )
    updated = index_cli("add", root, rebuilt, "--name", "restart_pod", "--capability", "remediation")
    assert updated.exit_code == 0 and " 1.10.0 updated " in updated.stdout
    assert updated.stderr == "warning: index.json.sig signs the index as it was: sign it again\n"
    stale = index_cli("check", root, "--public-key", public_key)
    assert stale.exit_code == 1
    assert stale.stdout.splitlines() == [
        f"{root}: the index's signature does not verify with its configured public_key: "
        "the index or its .sig was changed, or signed with another key",
        f"{root}/index.json: 0 agents, 1 problem",
    ]


def test_check_reports_bad_entries_and_packages_whose_sha256_is_wrong(tmp_path):
    root = tmp_path / "acme"
    wheel = agent_wheel(root / "wheels", "restart_pod", "1.0.0")
    assert index_cli("add", root, wheel, "--name", "restart_pod", "--capability", "remediation").exit_code == 0
    index = root / "index.json"
    document = json.loads(index.read_text())
    bad_name = {**document["agents"][0], "name": "Bad Name"}
    document["agents"].append(bad_name)
    index.write_text(json.dumps(document))
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    checked = index_cli("check", index)
    assert checked.exit_code == 1
    lines = checked.stdout.splitlines()
    assert lines[0] == f"{index}: agents[1] (Bad Name).name: String should match pattern '^[a-z][a-z0-9_]{{0,62}}$'"
    assert lines[1].startswith(f"{index}: restart_pod 1.0.0: {wheel}: its sha256 is {sha256_of(wheel)}, but index ")
    assert lines[-1] == f"{index}: 1 agent, 2 problems"
    assert index_cli("check", index, "--no-packages").stdout.splitlines()[-1] == f"{index}: 1 agent, 1 problem"


def test_mistakes_are_one_line_errors(tmp_path):
    root = tmp_path / "acme"
    wheel = agent_wheel(root / "wheels", "restart_pod", "1.0.0")
    key = tmp_path / "key.pem"
    assert index_cli("keygen", key).exit_code == 0
    cases = [
        (("keygen", key), f"error: {key} already exists: not overwritten\n"),
        (
            ("add", root, wheel, "--name", "other", "--capability", "remediation"),
            f"error: {wheel} declares no agent named 'other' (its agent_monitor.agents entry points: restart_pod)\n",
        ),
        (
            ("add", root, wheel, "--name", "restart_pod", "--capability", "hacking"),
            "error: not added: agents[0] (restart_pod).capabilities[0]: Input should be 'monitoring', "
            "'investigation', 'remediation', 'verification' or 'notification'\n",
        ),
        (
            ("add", root, key, "--name", "x", "--capability", "remediation"),
            f"error: {key}: not a wheel: not a zip archive\n",
        ),
        (("sign", root, "--key", key), f"error: cannot read {root}/index.json: No such file or directory\n"),
        (("check", root, "--public-key", "c2hvcnQ="), "error: public_key must be the base64 of a raw 32-byte Ed25519 "
         "public key (`agent-monitor agents index keygen` prints one)\n"),
    ]  # fmt: skip
    for args, error in cases:
        result = index_cli(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", error), args
    assert not (root / "index.json").exists()  # nothing was written by the refused adds
    (root / "index.json").write_text('{"format": "something-else"}')
    result = index_cli("sign", root, "--key", key)
    assert (
        result.stderr
        == f"error: not signed: {root}/index.json: format is 'something-else', expected 'agent-monitor-index/1'\n"
    )
    assert not (root / "index.json.sig").exists()
