"""The agent catalogue's index format (docs/agents.md, "The index format"), version 1.

An index is one JSON document listing agents a marketplace offers, in the spirit of StackStorm Exchange:

    {"format": "agent-monitor-index/1", "name": "acme", "agents": [
      {"name": "disk_cleanup", "description": "…", "author": "…", "homepage": "https://…", "license": "MIT",
       "capabilities": ["remediation"], "kind": "python", "readme": "markdown …",
       "versions": [
         {"version": "1.2.0", "released_at": "2026-11-30T00:00:00Z", "changelog": "markdown …",
          "requires": ">=0.1,<1", "params_schema": {…}, "default_risk": "medium", "simulation": "describe",
          "package": {"name": "acme-disk-cleanup", "url": "wheels/acme_disk_cleanup-1.2.0-py3-none-any.whl",
                      "sha256": "…", "dependencies": [{"url": "…", "sha256": "…"}]}}]}]}

`kind` says how the agent runs: `python` (a wheel declaring the agent in the `agent_monitor.agents` entry-point
group, installed with pip --require-hashes), `webhook` (`webhook: {"url", "timeout_seconds"}`: an agent that runs
elsewhere, registered as a webhook agent) or `command` (a container-free command; listed, not installable yet).
A relative package URL is resolved against the index's own location.

An index is trusted by its configured sha256 (one exact document) or by a detached Ed25519 signature: the file
`<index>.sig` holds the base64 of the raw 64-byte signature over the index's exact bytes, and the configured
`public_key` is the base64 of the raw 32-byte public key (`agent-monitor agents index keygen | sign`).

Versions are PEP 440 versions, which semver strings such as 1.2.0 and 1.2.0-rc.1 are too (1.2.0rc1); a version's
`requires` is a PEP 440 specifier the product's own version must satisfy.

This module is pure: models, parsing, version choice and the trust check. Reading indexes (files, directories,
HTTP through the outbound guard) is services/catalogue.py.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.agents import AGENT_NAME, Capability, Risk, Simulation, schema_problem

INDEX_FORMAT = "agent-monitor-index/1"
SHA256 = r"^[0-9a-f]{64}$"
Kind = Literal["python", "webhook", "command"]


class IndexSource(BaseModel):
    """One configured index (AGENT_INDEXES): where it is and how its bytes are trusted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", max_length=100)
    # A directory (holding index.json), a file, or an http(s) URL.
    source: str = Field(min_length=1, max_length=2048)
    # The index file's own sha256 (pins one exact index) …
    sha256: str | None = Field(default=None, pattern=SHA256)
    # … or the base64 raw Ed25519 public key its detached signature `<index>.sig` (base64) must verify with.
    public_key: str | None = Field(default=None, max_length=200)

    @field_validator("public_key")
    @classmethod
    def _raw_ed25519_key(cls, value: str | None) -> str | None:
        if value is not None:
            public_key_from_text(value)  # a ValueError naming what a key looks like
        return value

    @property
    def label(self) -> str:
        """The index's name where it is shown and recorded (at most 100 characters): its name, else its source."""
        if self.name or len(self.source) <= 100:
            return self.name or self.source
        return f"{self.source[:60]}…{self.source[-39:]}"


class PackageFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=2048)
    sha256: str = Field(pattern=SHA256)


class PythonPackage(PackageFile):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    # Wheels the package needs that this product does not already have, each with its sha256 (pip --no-deps).
    dependencies: tuple[PackageFile, ...] = Field(default=(), max_length=50)


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=2048)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)


class AgentVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, max_length=50)  # semver
    released_at: str = Field(default="", max_length=40)
    changelog: str = Field(default="", max_length=50_000)
    # The versions of Agent Monitor it works with (a PEP 440 specifier, e.g. ">=0.1,<1"); empty: any.
    requires: str = Field(default="", max_length=200)
    params_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    default_risk: Risk = "low"
    simulation: Simulation = "describe"
    package: PythonPackage | None = None
    webhook: WebhookTarget | None = None
    command: dict[str, Any] | None = None


class CatalogueAgent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=AGENT_NAME)
    description: str = Field(default="", max_length=2000)
    author: str = Field(default="", max_length=200)
    homepage: str = Field(default="", max_length=2048)
    license: str = Field(default="", max_length=100)
    capabilities: tuple[Capability, ...] = Field(min_length=1)
    kind: Kind
    readme: str = Field(default="", max_length=200_000)
    tags: tuple[str, ...] = Field(default=(), max_length=20)
    # Downloads as the index's publisher counts them (optional); installs here are counted by us.
    downloads: int = Field(default=0, ge=0)
    versions: tuple[AgentVersion, ...] = Field(min_length=1)


class IndexProblem(BaseModel):
    """Something wrong with an index: the whole of it (`where` empty) or one entry, which was left out."""

    model_config = ConfigDict(frozen=True)

    index: str
    # Where in the document, e.g. "agents[3] (disk_cleanup).versions[0].package.sha256"; "" for the whole index.
    where: str = ""
    message: str

    def __str__(self) -> str:
        return f"{self.index}: {self.where}: {self.message}" if self.where else f"{self.index}: {self.message}"


class ParsedIndex(BaseModel):
    """An index's good agents (each one's versions newest first) and the problems of the rest."""

    model_config = ConfigDict(frozen=True)

    title: str = ""  # the document's own "name"
    agents: tuple[CatalogueAgent, ...] = ()
    problems: tuple[IndexProblem, ...] = ()


class IndexRefused(ValueError):
    """The index's bytes are not the ones its configuration trusts (sha256 pin, Ed25519 signature)."""


MAX_PROBLEMS = 200  # per index: a hopelessly broken index says so without a page of thousands of lines
_ERRORS_PER_ENTRY = 5


def parse_index(raw: bytes, *, index_name: str) -> ParsedIndex:
    """Read an index document. Never raises: a document that is not an index is one problem; each bad agent entry
    is reported with its path and left out, the others kept."""

    def whole(message: str) -> ParsedIndex:
        return ParsedIndex(problems=(IndexProblem(index=index_name, message=message),))

    try:
        text = raw.decode()  # JSON documents are UTF-8 (RFC 8259)
    except UnicodeDecodeError as err:
        return whole(f"not a JSON document: not UTF-8 (at byte {err.start})")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as err:
        return whole(f"not a JSON document ({err})")
    if not isinstance(document, dict):
        return whole(f"not an index: a JSON {type(document).__name__}, expected an object")
    if document.get("format") != INDEX_FORMAT:
        return whole(f"format is {_shown(document.get('format'))}, expected {INDEX_FORMAT!r}")
    entries = document.get("agents", [])
    if not isinstance(entries, list):
        return whole("agents: must be a list")
    title = document.get("name") if isinstance(document.get("name"), str) else ""
    agents: dict[str, tuple[int, CatalogueAgent]] = {}
    problems: list[IndexProblem] = []
    for number, entry in enumerate(entries):
        label = _entry_label(number, entry)
        agent, found = _checked(label, entry)
        if agent is not None and agent.name in agents:
            message = f"{agent.name} is already offered by agents[{agents[agent.name][0]}] of this index: left out"
            found = [(f"{label}.name", message)]
        elif agent is not None:
            agents[agent.name] = (number, _sorted_versions(agent))
        problems.extend(IndexProblem(index=index_name, where=where, message=message) for where, message in found)
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS], IndexProblem(index=index_name, message=f"… and {more} more problems")]
    return ParsedIndex(
        title=str(title)[:200], agents=tuple(agent for _, agent in agents.values()), problems=tuple(problems)
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _entry_label(number: int, entry: object) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name.isprintable() and 0 < len(name) <= 64:
        return f"agents[{number}] ({name})"
    return f"agents[{number}]"


def _under(loc: tuple[int | str, ...], parent: tuple[int | str, ...]) -> bool:
    return len(loc) > len(parent) and loc[: len(parent)] == parent


def _path(label: str, loc: Iterable[int | str]) -> str:
    return label + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _checked(label: str, entry: object) -> tuple[CatalogueAgent | None, list[tuple[str, str]]]:
    """The agent of one entry if it is good, and (where, why) for each thing wrong with it."""
    try:
        agent = CatalogueAgent.model_validate(entry)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        # A tuple whose items all failed also reports being too short: the items' own errors say it better.
        locs = [error["loc"] for error in errors]
        errors = [e for e in errors if e["type"] != "too_short" or not any(_under(loc, e["loc"]) for loc in locs)]
        found = [(_path(label, error["loc"]), error["msg"]) for error in errors[:_ERRORS_PER_ENTRY]]
        if len(errors) > _ERRORS_PER_ENTRY:
            found.append((label, f"… and {len(errors) - _ERRORS_PER_ENTRY} more mistakes in this entry"))
        return None, found
    found = []
    seen: dict[Version, int] = {}
    for number, version in enumerate(agent.versions):
        where = f"{label}.versions[{number}]"
        parsed = parse_version(version.version)
        if parsed is None:
            found.append((f"{where}.version", f"{version.version!r} is not a version (e.g. 1.2.0 or 1.2.0-rc.1)"))
        elif parsed in seen:
            found.append((f"{where}.version", f"{version.version} is listed twice (versions[{seen[parsed]}])"))
        else:
            seen[parsed] = number
        found.extend((f"{where}.{field}", why) for field, why in _version_problems(agent.kind, version))
    return (None if found else agent), found


def _version_problems(kind: Kind, version: AgentVersion) -> list[tuple[str, str]]:
    found = []
    try:
        SpecifierSet(version.requires)
    except InvalidSpecifier:
        found.append(("requires", f"{version.requires!r} is not a version specifier (e.g. >=0.1,<1)"))
    problem = schema_problem(version.params_schema)
    if problem:
        found.append(("params_schema", problem.removeprefix("params_schema ")))
    for field, owner in (("package", "python"), ("webhook", "webhook"), ("command", "command")):
        present = getattr(version, field) is not None
        if owner == kind and not present and kind != "command":  # a command agent is listed, never installed
            found.append((field, f"a {kind} agent's version needs its {field}"))
        elif owner != kind and present:
            found.append((field, f"only a {owner} agent's version has a {field} (this agent's kind is {kind})"))
    if version.package is not None:
        files: list[tuple[str, PackageFile]] = [("package", version.package)]
        files += [(f"package.dependencies[{n}]", dep) for n, dep in enumerate(version.package.dependencies)]
        for where, file in files:
            scheme = urlsplit(file.url).scheme.lower()
            if len(scheme) > 1 and scheme not in ("http", "https", "file"):  # one letter: a Windows drive
                found.append((f"{where}.url", f"must be an http(s) URL or a path relative to the index, not {scheme}:"))
    if version.webhook is not None:
        parts = urlsplit(version.webhook.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            found.append(("webhook.url", "must be an http(s) URL with a host"))
    return found


def _sorted_versions(agent: CatalogueAgent) -> CatalogueAgent:
    ordered = sorted(agent.versions, key=lambda version: _version_key(version.version), reverse=True)
    return agent.model_copy(update={"versions": tuple(ordered)})


# Versions and compatibility


def parse_version(text: str) -> Version | None:
    """The version a string names (PEP 440; semver's 1.2.0-rc.1 reads as 1.2.0rc1), or None."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _version_key(text: str) -> Version:
    return parse_version(text) or Version("0.dev0")  # only for entries built without parse_index: sort them last


@functools.cache
def product_version() -> str:
    """This product's version as installed (what an index version's `requires` is checked against)."""
    try:
        return distribution_version("agent-monitor")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


def incompatibility(version: AgentVersion, product: str | None = None) -> str | None:
    """Why this version cannot run on this product (e.g. "needs Agent Monitor >=2 (this is 0.1.0)"), or None."""
    product = product or product_version()
    if not version.requires:
        return None
    try:
        # Pre-releases allowed: a development build of the product still runs agents made for its series.
        fits = SpecifierSet(version.requires).contains(product, prereleases=True)
    except InvalidSpecifier:
        return f"its requirement {version.requires!r} is not a version specifier"
    return None if fits else f"needs Agent Monitor {version.requires} (this is {product})"


def latest(agent: CatalogueAgent, product: str | None = None) -> AgentVersion | None:
    """The version to install: the highest that runs on this product, not a pre-release unless only pre-releases
    do (as pip chooses); None when no version does."""
    fits = [v for v in agent.versions if parse_version(v.version) is not None and incompatibility(v, product) is None]
    finals = [v for v in fits if not Version(v.version).is_prerelease]
    return max(finals or fits, key=lambda v: Version(v.version), default=None)


def find_version(agent: CatalogueAgent, version: str) -> AgentVersion | None:
    """The agent's entry for this version (1.2 and 1.2.0 are the same version), or None."""
    wanted = parse_version(version)
    return next((v for v in agent.versions if wanted is not None and parse_version(v.version) == wanted), None)


def is_newer(candidate: str, current: str) -> bool:
    """Whether version `candidate` is after `current` (False when either is not a version): an update badge."""
    new, old = parse_version(candidate), parse_version(current)
    return new is not None and old is not None and new > old


# Trust


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """The Ed25519 public key a configured `public_key` (base64 of the raw 32 bytes) stands for."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValueError(
            "public_key must be the base64 of a raw 32-byte Ed25519 public key "
            "(`agent-monitor agents index keygen` prints one)"
        ) from None


def public_key_text(private_key: Ed25519PrivateKey) -> str:
    """The `public_key` to configure for indexes signed with this private key."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign_index(raw: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The content of the index's `.sig` file: base64 of the Ed25519 signature over these exact bytes."""
    return base64.b64encode(private_key.sign(raw)) + b"\n"


def verify_index(raw: bytes, source: IndexSource, signature: bytes | None) -> None:
    """Raise IndexRefused unless the index's bytes match its configured sha256 and/or signature (none: trusted as
    read). `signature` is the `.sig` file's content, None when there is none."""
    if source.sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != source.sha256:
            raise IndexRefused(f"the index's sha256 is {actual}, but its configured sha256 is {source.sha256}")
    if source.public_key is None:
        return
    if signature is None:
        raise IndexRefused("the index has no signature (its .sig file), and a public_key is configured for it")
    try:
        decoded = base64.b64decode(signature.strip(), validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != 64:
        raise IndexRefused("the index's .sig file is not the base64 of a 64-byte Ed25519 signature")
    try:
        public_key_from_text(source.public_key).verify(decoded, raw)
    except InvalidSignature:
        raise IndexRefused(
            "the index's signature does not verify with its configured public_key: "
            "the index or its .sig was changed, or signed with another key"
        ) from None
