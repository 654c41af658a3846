"""`agent-monitor agents index keygen | sign | add | check`: publishing an agent index (docs/agents.md, "Indexes:
configuring and signing"). They work on files here and need no running Agent Monitor.

INDEX is an index file, or a directory holding index.json (a path that does not exist and does not end in .json is
taken as a directory). The signature of an index is the file next to it with .sig appended.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key
from packaging.version import Version
from pydantic import ValidationError

from cli.common import fail, settings_or_exit
from core.catalogue import INDEX_FORMAT, IndexSource, parse_index, parse_version, public_key_text, sign_index
from core.settings import Settings
from core.wheels import NotAWheel, wheel_info
from services.catalogue import Catalogue, PackageRefused, fetch_package, load_catalogue
from services.catalogue_fetch import INDEX_FILE, SIGNATURE_SUFFIX

index_app = typer.Typer(no_args_is_help=True, help="Publish an agent index: keys, signatures, entries, checks.")

IndexArg = Annotated[Path, typer.Argument(help="The index file, or a directory holding index.json")]


def _index_file(index: Path) -> Path:
    if index.is_dir() or (not index.exists() and index.suffix != ".json"):
        return index / INDEX_FILE
    return index


@index_app.command()
def keygen(
    key_file: Annotated[Path, typer.Argument(help="Where to write the private key (PEM, mode 0600)")],
) -> None:
    """Make an Ed25519 key pair for signing indexes: the private key goes to KEY_FILE (never overwritten); the
    public key, to configure as the index's public_key, is printed."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise fail(f"{key_file} already exists: not overwritten") from None
    except OSError as err:
        raise fail(f"cannot write {key_file}: {err.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(descriptor, 0o600)  # whatever the umask
        file.write(pem)
    typer.echo(public_key_text(key))
    typer.echo(f"private key written to {key_file}: keep it secret; configure the printed public_key", err=True)


@index_app.command()
def sign(
    index: IndexArg,
    key: Annotated[Path, typer.Option("--key", help="The private key file `keygen` wrote")],
) -> None:
    """Sign the index's exact bytes: writes INDEX.sig (base64 of the Ed25519 signature)."""
    path = _index_file(index)
    raw = _read(path)
    try:
        private_key = load_pem_private_key(_read(key), password=None)
    except (ValueError, TypeError) as err:
        raise fail(f"{key} is not an unencrypted PEM private key ({err})") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise fail(f"{key} is not an Ed25519 private key (make one with `keygen`)")
    parsed = parse_index(raw, index_name=str(path))
    if any(not problem.where for problem in parsed.problems):
        raise fail(f"not signed: {parsed.problems[0]}")
    for problem in parsed.problems:
        typer.echo(f"warning: {problem}", err=True)
    signature = path.with_name(path.name + SIGNATURE_SUFFIX)
    signature.write_bytes(sign_index(raw, private_key))
    typer.echo(f"signed {path}: {signature} (public_key {public_key_text(private_key)})")


@index_app.command()
def add(
    index: IndexArg,
    wheel: Annotated[Path, typer.Argument(help="The agent's wheel (.whl)")],
    name: Annotated[str, typer.Option("--name", help="The agent's name, as the wheel's entry point declares it")],
    capability: Annotated[list[str], typer.Option("--capability", help="monitoring, investigation, … (repeatable)")],
    description: Annotated[str | None, typer.Option(help="One paragraph")] = None,
    author: Annotated[str | None, typer.Option()] = None,
    homepage: Annotated[str | None, typer.Option()] = None,
    license: Annotated[str | None, typer.Option("--license")] = None,  # noqa: A002
    readme: Annotated[Path | None, typer.Option(help="A markdown file shown on the agent's page")] = None,
    requires: Annotated[str | None, typer.Option(help="Agent Monitor versions it runs on, e.g. '>=0.1,<1'")] = None,
    risk: Annotated[str | None, typer.Option(help="Default risk: low, medium, high or critical")] = None,
    simulation: Annotated[str | None, typer.Option(help="In a dry run: read or describe")] = None,
    params_schema: Annotated[str | None, typer.Option(help="JSON schema of its params (JSON, or @file)")] = None,
    changelog: Annotated[str | None, typer.Option(help="What this version changes (markdown)")] = None,
    url: Annotated[str | None, typer.Option(help="The wheel's URL (default: its path relative to the index)")] = None,
) -> None:
    """Add the wheel as a version of agent NAME (or update that version), with its sha256 and URL. Creates the
    index if missing. Fields not given are kept from the version's entry, else from the newest version."""
    path = _index_file(index)
    data = _read(wheel)
    try:
        info = wheel_info(data)
    except NotAWheel as err:
        raise fail(f"{wheel}: {err}") from None
    if name not in info.agents:
        declared = ", ".join(sorted(info.agents)) or "none"
        raise fail(f"{wheel} declares no agent named {name!r} (its agent_monitor.agents entry points: {declared})")
    document = _load_or_new(path)
    agents: list[dict[str, Any]] = document["agents"]
    agent = next((a for a in agents if isinstance(a, dict) and a.get("name") == name), None)
    if agent is None:
        agent = {"name": name, "kind": "python", "versions": []}
        agents.append(agent)
    elif agent.get("kind") != "python":
        raise fail(f"{name} is a {agent.get('kind')} agent in {path}: a wheel is for a python agent")
    fields = {"description": description, "author": author, "homepage": homepage, "license": license}
    agent.update({key: value for key, value in fields.items() if value is not None}, capabilities=capability)
    if readme is not None:
        agent["readme"] = _read(readme).decode(errors="replace")
    versions = [v for v in agent.get("versions", []) if isinstance(v, dict)]
    same = [v for v in versions if parse_version(str(v.get("version"))) == parse_version(info.version)]
    base = dict(same[0]) if same else _carried(versions)
    given = {"requires": requires, "default_risk": risk, "simulation": simulation, "changelog": changelog}
    base.update({key: value for key, value in given.items() if value is not None}, version=info.version)
    if params_schema is not None:
        base["params_schema"] = _json_option(params_schema)
    base.setdefault("released_at", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    wheel_url = url or Path(os.path.relpath(wheel.resolve(), path.parent.resolve())).as_posix()
    package = dict(base.get("package") or {})
    base["package"] = package | {"name": info.name, "url": wheel_url, "sha256": hashlib.sha256(data).hexdigest()}
    agent["versions"] = [v for v in versions if v not in same] + [base]
    raw = _dumped(document)
    where = f"agents[{agents.index(agent)}]"  # after _dumped sorted them
    problems = parse_index(raw, index_name=str(path)).problems
    mine = [problem for problem in problems if problem.where.startswith((f"{where} ", f"{where}."))]
    if mine:
        raise fail(f"not added: {mine[0].where}: {mine[0].message}")
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(raw)
    temporary.replace(path)
    typer.echo(f"{path}: {name} {info.version} {'updated' if same else 'added'} ({info.name}, {wheel_url})")
    if path.with_name(path.name + SIGNATURE_SUFFIX).exists():
        typer.echo(f"warning: {path.name}{SIGNATURE_SUFFIX} signs the index as it was: sign it again", err=True)


@index_app.command()
def check(
    index: Annotated[str, typer.Argument(help="An index file, a directory holding index.json, or an http(s) URL")],
    public_key: Annotated[str | None, typer.Option(help="Verify its signature with this public key")] = None,
    sha256: Annotated[str | None, typer.Option(help="Verify the index is exactly this sha256")] = None,
    packages: Annotated[bool, typer.Option(help="Also fetch every package and check its sha256")] = True,
) -> None:
    """Read the index as Agent Monitor would and print its problems (exit 1 if any)."""
    try:
        source = IndexSource(source=index, public_key=public_key, sha256=sha256)
    except ValidationError as err:
        raise fail(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
    settings = settings_or_exit().model_copy(update={"agent_indexes": [source]})
    catalogue, problems = asyncio.run(_checked(settings, packages=packages))
    for problem in problems:
        typer.echo(problem)
    status = catalogue.indexes[0]
    counted = f"{_count(status.agents, 'agent')}, {_count(len(problems), 'problem')}"
    typer.echo(f"{status.location or index}: {counted}")
    if problems:
        raise typer.Exit(1)


async def _checked(settings: Settings, *, packages: bool) -> tuple[Catalogue, list[str]]:
    """The index read afresh, and its problems: its own, then (with `packages`) each package that is not right."""
    catalogue = await load_catalogue(settings, refresh=True)
    problems = [str(problem) for problem in catalogue.problems]
    for listing in catalogue.listings if packages else ():
        for version in listing.agent.versions:
            files = (version.package, *version.package.dependencies) if version.package else ()
            for file in files:
                try:
                    await fetch_package(listing, file, settings)
                except PackageRefused as err:
                    problems.append(f"{listing.index}: {listing.name} {version.version}: {err}")
    return catalogue, problems


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise fail(f"cannot read {path}: {err.strerror or err}") from None


def _load_or_new(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": INDEX_FORMAT, "name": path.parent.resolve().name, "agents": []}
    try:
        document = json.loads(_read(path))
    except ValueError as err:
        raise fail(f"{path} is not JSON ({err})") from None
    if not isinstance(document, dict) or document.get("format") != INDEX_FORMAT:
        raise fail(f"{path} is not an agent index (format {INDEX_FORMAT!r})")
    if not isinstance(document.setdefault("agents", []), list):
        raise fail(f"{path}: agents is not a list")
    return document


def _carried(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """What a new version keeps from the newest one: what it runs on and how it is used, not its release notes or
    its package's dependencies."""
    newest = max(versions, key=_version_order, default={})
    return {key: newest[key] for key in ("requires", "params_schema", "default_risk", "simulation") if key in newest}


def _version_order(entry: object) -> tuple[bool, Version]:
    version = parse_version(str(entry.get("version"))) if isinstance(entry, dict) else None
    return (version is not None, version or Version("0"))


def _json_option(value: str) -> Any:
    text = _read(Path(value[1:])).decode() if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as err:
        raise fail(f"--params-schema is not JSON ({err})") from None


def _dumped(document: dict[str, Any]) -> bytes:
    """The index as written: keys sorted, agents by name, versions newest first — a stable diff."""
    for agent in document["agents"]:
        if isinstance(agent, dict) and isinstance(agent.get("versions"), list):
            agent["versions"].sort(
                key=lambda v: _version_order(v) if isinstance(v, dict) else (False, Version("0")), reverse=True
            )
    document["agents"].sort(key=lambda a: str(a.get("name", "")) if isinstance(a, dict) else "")
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
