"""The index format (core/catalogue.py): what an index publisher's mistakes look like, which version is offered,
and when an index's bytes are trusted."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from core.catalogue import (
    INDEX_FORMAT,
    CatalogueAgent,
    IndexRefused,
    IndexSource,
    find_version,
    incompatibility,
    is_newer,
    latest,
    parse_index,
    product_version,
    public_key_text,
    verify_index,
)
from core.settings import SettingsError, load_settings

SHA = "ab" * 32


def python_agent(name: str, *versions: str, **fields: Any) -> dict[str, Any]:
    package = {"name": f"acme-{name}", "url": f"wheels/{name}.whl", "sha256": SHA}
    return {
        "name": name,
        "capabilities": ["remediation"],
        "kind": "python",
        **fields,
        "versions": [{"version": version, "package": package} for version in versions],
    }


def index(*agents: Any) -> bytes:
    return json.dumps({"format": INDEX_FORMAT, "name": "Acme agents", "agents": list(agents)}).encode()


def problems(raw: bytes) -> list[str]:
    return [str(problem) for problem in parse_index(raw, index_name="acme").problems]


def test_bad_entries_are_reported_with_their_path_and_left_out_while_good_ones_stay():
    bad_sha = python_agent("disk_cleanup", "1.0.0")
    bad_sha["versions"][0]["package"] = {**bad_sha["versions"][0]["package"], "sha256": "not-a-sha"}
    no_package = python_agent("no_package", "1.0.0")
    del no_package["versions"][0]["package"]
    no_target = {"name": "pager", "capabilities": ["notification"], "kind": "webhook", "versions": [{"version": "1"}]}
    bad_schema = python_agent("bad_schema", "1.0.0")
    bad_schema["versions"][0]["params_schema"] = {"type": "nonsense"}
    raw = index(
        python_agent("restart_pod", "1.0.0"),
        bad_sha,
        python_agent("semver_junk", "1.0.0-alpha.beta"),
        no_package,
        no_target,
        bad_schema,
        python_agent("restart_pod", "2.0.0"),
        {"name": "bad_capability", "capabilities": ["hacking"], "kind": "python", "versions": [{"version": "1"}]},
        "not an object",
        python_agent("log_search", "0.3.0"),
    )
    parsed = parse_index(raw, index_name="acme")
    assert parsed.title == "Acme agents"
    assert [agent.name for agent in parsed.agents] == ["restart_pod", "log_search"]
    assert parsed.agents[0].versions[0].version == "1.0.0"  # the first entry of a name wins
    assert [str(problem) for problem in parsed.problems] == [
        "acme: agents[1] (disk_cleanup).versions[0].package.sha256: String should match pattern '^[0-9a-f]{64}$'",
        "acme: agents[2] (semver_junk).versions[0].version: '1.0.0-alpha.beta' is not a version "
        "(e.g. 1.2.0 or 1.2.0-rc.1)",
        "acme: agents[3] (no_package).versions[0].package: a python agent's version needs its package",
        "acme: agents[4] (pager).versions[0].webhook: a webhook agent's version needs its webhook",
        "acme: agents[5] (bad_schema).versions[0].params_schema: is not a valid JSON schema: "
        "'nonsense' is not valid under any of the given schemas",
        "acme: agents[6] (restart_pod).name: restart_pod is already offered by agents[0] of this index: left out",
        "acme: agents[7] (bad_capability).capabilities[0]: Input should be 'monitoring', 'investigation', "
        "'remediation', 'verification' or 'notification'",
        "acme: agents[8]: Input should be a valid dictionary or instance of CatalogueAgent",
    ]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            b"{not json",
            "acme: not a JSON document (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        (
            b"\xff\xfe",
            "acme: not a JSON document: not UTF-8 (at byte 0)",
        ),
        (b"[]", "acme: not an index: a JSON list, expected an object"),
        (b'{"agents": []}', "acme: format is None, expected 'agent-monitor-index/1'"),
        (
            b'{"format": "agent-monitor-index/2", "agents": []}',
            "acme: format is 'agent-monitor-index/2', expected 'agent-monitor-index/1'",
        ),
        (json.dumps({"format": INDEX_FORMAT, "agents": {}}).encode(), "acme: agents: must be a list"),
        (b"[" * 100_000, None),  # deeper than the parser recurses: still one problem, not a crash
    ],
)
def test_a_document_that_is_not_an_index_is_one_problem(raw, problem):
    found = problems(raw)
    assert len(found) == 1
    if problem is not None:
        assert found == [problem]


def test_more_mistakes_of_versions_and_a_bounded_count_of_problems():
    duplicate = python_agent("restart_pod", "1.0", "1.0.0")  # the same version twice
    webhook_with_package = python_agent("hook", "1.0.0", kind="webhook")
    bad_requires = python_agent("old", "1.0.0")
    bad_requires["versions"][0]["requires"] = "at least 2"
    raw = index(duplicate, webhook_with_package, bad_requires)
    assert problems(raw) == [
        "acme: agents[0] (restart_pod).versions[1].version: 1.0.0 is listed twice (versions[0])",
        "acme: agents[1] (hook).versions[0].package: only a python agent's version has a package "
        "(this agent's kind is webhook)",
        "acme: agents[1] (hook).versions[0].webhook: a webhook agent's version needs its webhook",
        "acme: agents[2] (old).versions[0].requires: 'at least 2' is not a version specifier (e.g. >=0.1,<1)",
    ]
    many = problems(index(*([{"name": "x"}] * 500)))
    assert len(many) == 201 and many[-1].startswith("acme: … and ")


def test_versions_are_ordered_as_versions_and_semver_prereleases_come_before_their_release():
    raw = index(python_agent("restart_pod", "1.2.0-rc.1", "1.10.0", "1.2.0", "1.9.3", "0.9.0"))
    [agent] = parse_index(raw, index_name="acme").agents
    assert [v.version for v in agent.versions] == ["1.10.0", "1.9.3", "1.2.0", "1.2.0-rc.1", "0.9.0"]
    assert is_newer("1.10.0", "1.9.3") and not is_newer("1.2.0-rc.1", "1.2.0") and not is_newer("junk", "1.0")
    assert find_version(agent, "1.2") is agent.versions[2]
    assert find_version(agent, "3.0") is None


def agent_with(versions: dict[str, str]) -> CatalogueAgent:
    raw = index(python_agent("restart_pod", *versions))
    entry = json.loads(raw)["agents"][0]
    for version in entry["versions"]:
        version["requires"] = versions[version["version"]]
    [agent] = parse_index(json.dumps({"format": INDEX_FORMAT, "agents": [entry]}).encode(), index_name="a").agents
    return agent


def test_latest_is_the_highest_version_this_product_runs_and_says_why_newer_ones_do_not():
    agent = agent_with({"1.0.0": ">=0.1,<1", "1.5.0": "", "2.0.0": ">=2", "2.1.0-rc.1": ""})
    assert latest(agent, "0.1.0").version == "1.5.0"  # not the pre-release, not the one needing >=2
    assert latest(agent, "2.0.0").version == "2.0.0"
    newest = find_version(agent, "2.0.0")
    assert incompatibility(newest, "0.1.0") == "needs Agent Monitor >=2 (this is 0.1.0)"
    assert incompatibility(newest, "2.3.0") is None
    # A development build of the product still runs what its series runs.
    assert incompatibility(find_version(agent, "1.0.0"), "0.9.0.dev3") is None
    only_prereleases = agent_with({"3.0.0-rc.1": "", "3.0.0-rc.2": ""})
    assert latest(only_prereleases, "0.1.0").version == "3.0.0-rc.2"
    nothing_fits = agent_with({"4.0.0": ">=4"})
    assert latest(nothing_fits, "0.1.0") is None
    assert product_version() == "0.1.0"  # the installed agent-monitor's: what `requires` is checked against
    assert latest(agent).version == "1.5.0"


RAW = index(python_agent("restart_pod", "1.0.0"))


def signed(raw: bytes, key: Ed25519PrivateKey) -> bytes:
    return base64.b64encode(key.sign(raw))


def test_an_index_pinned_by_its_sha256_is_trusted_only_with_those_exact_bytes():
    pinned = IndexSource(source="/srv/index.json", sha256=hashlib.sha256(RAW).hexdigest())
    verify_index(RAW, pinned, None)
    with pytest.raises(IndexRefused) as refused:
        verify_index(RAW + b" ", pinned, None)
    assert str(refused.value) == (
        f"the index's sha256 is {hashlib.sha256(RAW + b' ').hexdigest()}, but its configured sha256 is {pinned.sha256}"
    )


def test_a_signed_index_is_trusted_only_with_a_good_signature_of_its_exact_bytes():
    key = Ed25519PrivateKey.generate()
    source = IndexSource(source="https://agents.example/index.json", public_key=public_key_text(key))
    verify_index(RAW, source, signed(RAW, key) + b"\n")
    tampered = RAW.replace(b"restart_pod", b"wipe_disks_")
    good = bytearray(key.sign(RAW))
    good[10] ^= 1
    for raw, signature in (
        (tampered, signed(RAW, key)),  # the index changed after signing
        (RAW, base64.b64encode(bytes(good))),  # the signature changed
        (RAW, signed(RAW, Ed25519PrivateKey.generate())),  # signed with another key
    ):
        with pytest.raises(IndexRefused, match="signature does not verify with its configured public_key"):
            verify_index(raw, source, signature)
    with pytest.raises(IndexRefused, match=r"no signature \(its \.sig file\)"):
        verify_index(RAW, source, None)
    with pytest.raises(IndexRefused, match="not the base64 of a 64-byte Ed25519 signature"):
        verify_index(RAW, source, b"c2hvcnQ=")
    # Unsigned and unpinned: trusted as read (a local directory the operator controls).
    verify_index(tampered, IndexSource(source="/srv/agents"), None)


def test_a_public_key_that_is_not_one_is_refused_when_the_settings_are_read():
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, agent_indexes='[{"source": "/srv/agents", "public_key": "c2hvcnQ="}]')
    assert "public_key must be the base64 of a raw 32-byte Ed25519 public key" in str(refused.value)
    key = public_key_text(Ed25519PrivateKey.generate())
    settings = load_settings(_env_file=None, agent_indexes=f'[{{"source": "/srv/agents", "public_key": "{key}"}}]')
    assert settings.agent_indexes == [IndexSource(source="/srv/agents", public_key=key)]
    assert settings.agent_indexes[0].label == "/srv/agents"
    long = IndexSource(source="https://agents.example/" + "x" * 200 + "/index.json")
    assert len(long.label) == 100 and long.label.endswith("/index.json")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
ENTRY_KEYS = st.sampled_from(["name", "capabilities", "kind", "versions", "version", "package", "webhook", "url"])


@given(
    st.lists(
        st.dictionaries(ENTRY_KEYS, JSON, max_size=6) | JSON.map(lambda value: {"name": "x", "versions": [value]}),
        max_size=5,
    )
)
def test_any_entries_give_good_agents_or_problems_never_an_exception(entries):
    parsed = parse_index(index(python_agent("restart_pod", "1.0.0"), *entries), index_name="acme")
    assert parsed.agents[0].name == "restart_pod"
    assert all(problem.where.startswith("agents[") for problem in parsed.problems)
