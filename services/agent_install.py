"""Install, update and remove agents (docs/agents.md, "Marketplace"): from a configured index or a wheel given
directly; admin-only and audited by the callers (API, pages, CLI through the API).

A Python agent's wheels are checked against their sha256 (the index's, then pip's --require-hashes), installed
into a new version directory, and probed in a separate process: the package must declare exactly the agent it
is installed as. Only then is the new version recorded (one transaction: the wheel bytes, the installed row, the
install event, the audit row and a NOTIFY that makes every worker restart to load it). Any failure before that
leaves the previous version recorded and on disk, untouched: it keeps working.

A webhook agent from an index becomes a row of webhook_agents (a fresh signing secret, shown once), updated in
place by later versions (the secret is kept).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name
from sqlalchemy import Engine, text
from sqlmodel import Session, col, func, select

from activities.registry import BUILTIN_CLASSES
from core.agents import BUILTIN_SPECS, ENTRY_POINT_GROUP, AgentSpec
from core.audit import Actor, record_audit
from core.catalogue import AgentVersion, incompatibility, parse_version, product_version
from core.errors import Conflict, Invalid, NotFound
from core.marketplace import AGENTS_CHANNEL, AgentInstallEvent, AgentPackage, InstalledAgent
from core.outbound import BlockedTarget, OutboundPolicy, check_url
from core.settings import Settings
from core.webhook_agents import WebhookAgent
from core.wheels import NotAWheel, wheel_info
from services.agent_packages import (
    PackageProblem,
    Wheel,
    check_probe,
    commit_dir,
    discard,
    environment_agents,
    unpack,
    version_dir,
)
from services.catalogue import Listing, PackageRefused, fetch_package, load_catalogue
from services.playbooks import latest_playbooks


class InstallRefused(Invalid):
    """The package or index entry cannot be installed; nothing changed."""


class InstallBusy(Conflict):
    """Another install, update or removal of the same agent is running."""


@dataclass
class Installed:
    name: str
    kind: str
    version: str
    previous_version: str | None
    action: str  # install | update | unchanged
    spec: dict[str, Any]
    changelog: str = ""
    secret: str | None = None  # a new webhook agent's signing secret: shown once
    warnings: list[str] = field(default_factory=list)


def choose_version(listing: Listing, wanted: str | None) -> AgentVersion:
    """The version to install: the one asked for, or the highest this product can run."""
    agent = listing.agent
    if wanted:
        entry = listing.version(wanted)
        if entry is None:
            offered = ", ".join(v.version for v in agent.versions)
            raise NotFound(f"{agent.name} has no version {wanted!r} in its index (offered: {offered})")
        problem = incompatibility(entry)
        if problem:
            raise InstallRefused(f"{agent.name} {entry.version} cannot be installed: it {problem}")
        return entry
    best = listing.latest()
    if best is None:
        raise InstallRefused(f"no version of {agent.name} works with Agent Monitor {product_version()}")
    return best


def _reserved(session: Session, name: str) -> str | None:
    """Who already provides an agent named `name` (other than the marketplace), or None."""
    if name in BUILTIN_SPECS or name in {cls.spec.name for cls in BUILTIN_CLASSES}:
        return "a built-in agent"
    installed = session.get(InstalledAgent, name)
    # A plugin pip installed into the environment (not one of ours, which a worker here may have loaded).
    if installed is None and name in environment_agents():
        return "a package installed into this environment"
    hook = session.exec(select(WebhookAgent).where(WebhookAgent.name == name)).first()
    if hook is not None and (installed is None or installed.kind != "webhook"):
        return "a webhook agent registered by hand"
    return None


@contextlib.contextmanager
def agent_lock(engine: Engine, name: str) -> Iterator[None]:
    """One install, update or removal of an agent at a time, across web processes (a session advisory lock)."""
    with engine.connect() as conn:
        key = conn.execute(text("SELECT hashtext(:k)"), {"k": f"agent-install:{name}"}).scalar_one()
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one():
            raise InstallBusy(f"{name} is being installed, updated or removed right now; try again when it is done")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def _diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    if before is None:
        return {}
    changes: dict[str, Any] = {}
    for key in ("default_risk", "params_schema", "capabilities", "simulation", "description"):
        if before.get(key) != after.get(key):
            changes[key] = {"before": before.get(key), "after": after.get(key)}
    return changes


def _record(
    session: Session,
    *,
    actor: Actor,
    row: InstalledAgent,
    before: InstalledAgent | None,
    wheels: list[Wheel],
) -> str:
    action = "install" if before is None else "update"
    for wheel in wheels:
        if session.get(AgentPackage, wheel.sha256) is None:
            session.add(
                AgentPackage(sha256=wheel.sha256, filename=wheel.filename, size=len(wheel.data), data=wheel.data)
            )
    session.add(AgentInstallEvent(agent=row.name, version=row.version, action=action, actor=actor.name))
    record_audit(
        session,
        actor=actor,
        action=f"agent.{action}",
        target_type="agent",
        target_id=row.name,
        before=None if before is None else {"version": before.version, "kind": before.kind},
        after={"version": row.version, "kind": row.kind, "index": row.index_name, "wheels": row.wheels},
    )
    session.execute(text("SELECT pg_notify(:c, :p)"), {"c": AGENTS_CHANNEL, "p": f"{action}:{row.name}"})
    return action


def _install_wheels(
    engine: Engine,
    settings: Settings,
    *,
    actor: Actor,
    wheels: list[Wheel],
    agent: str | None,
    index_name: str,
    version: str | None,
    changelog: str,
) -> Installed:
    main = wheels[0]
    dist, wheel_version = main.dist()
    try:  # read without installing: a file that is not a wheel, or declares no agent, never reaches pip
        declared = wheel_info(main.data).agents
    except NotAWheel as err:
        raise InstallRefused(f"{main.filename}: {err}") from None
    if not declared:
        raise InstallRefused(f"{dist} {wheel_version} declares no agent (entry-point group {ENTRY_POINT_GROUP!r})")
    if agent is not None and agent not in declared:
        raise InstallRefused(f"{dist} {wheel_version} declares {', '.join(sorted(declared))}, not {agent!r}")
    if version is not None and parse_version(wheel_version) != parse_version(version):  # 1.2 is 1.2.0
        raise InstallRefused(f"the wheel is {dist} {wheel_version}, the index says version {version}")
    plugin_dir = settings.effective_plugin_dir
    try:
        staging, probed = unpack(plugin_dir, agent or dist, wheel_version, wheels)
    except PackageProblem as err:
        raise InstallRefused(str(err)) from None
    try:
        spec = check_probe(probed, main=main, agent=agent)
        name = spec["name"]
        AgentSpec.model_validate(spec)
        with agent_lock(engine, name), Session(engine) as session:
            taken = _reserved(session, name)
            if taken:
                raise InstallRefused(f"an agent named {name!r} already exists here: {taken}")
            before = session.get(InstalledAgent, name)
            if before is not None and before.kind != "python":
                raise InstallRefused(f"{name} is installed as a {before.kind} agent; remove it first")
            if before is not None and before.wheels[:1] == [main.sha256]:
                discard(staging)
                return Installed(name, "python", before.version, before.previous_version, "unchanged", before.spec)
            commit_dir(staging, version_dir(plugin_dir, name, wheel_version, main.sha256))
            previous = None if before is None else before.version
            row = before or InstalledAgent(name=name, kind="python", version=wheel_version)
            old_spec = None if before is None else dict(before.spec)
            row.version, row.index_name, row.package_name = wheel_version, index_name, dist
            row.wheels, row.spec, row.changelog = [w.sha256 for w in wheels], spec, changelog
            row.previous_version, row.installed_by = previous, actor.name
            row.updated_at = func.now()  # type: ignore[assignment]
            session.add(row)
            action = _record(session, actor=actor, row=row, before=before, wheels=wheels)
            session.commit()
    except PackageProblem as err:
        discard(staging)
        raise InstallRefused(str(err)) from None
    except BaseException:
        discard(staging)
        raise
    installed = Installed(name, "python", wheel_version, previous, action, spec, changelog)
    installed.warnings = [f"{k} changed" for k in _diff(old_spec, spec)]
    return installed


def install_wheel(
    engine: Engine, settings: Settings, *, actor: Actor, data: bytes, filename: str, sha256: str | None = None
) -> Installed:
    """Install (or update to) the agent a wheel given directly declares; `sha256`, when given, must match."""
    wheel = Wheel(filename, data)
    if sha256 is not None and wheel.sha256 != sha256.lower():
        raise InstallRefused(f"{filename}: sha256 is {wheel.sha256}, not the expected {sha256.lower()}")
    if len(data) > settings.agent_package_max_bytes:
        raise InstallRefused(f"{filename} is larger than AGENT_PACKAGE_MAX_BYTES ({settings.agent_package_max_bytes})")
    return _install_wheels(
        engine, settings, actor=actor, wheels=[wheel], agent=None, index_name="", version=None, changelog=""
    )


async def install_from_index(
    engine: Engine, settings: Settings, *, actor: Actor, name: str, version: str | None = None, update: bool = False
) -> Installed:
    """Install `name` (the version asked for, or the highest this product can run) from the configured indexes;
    installing another version of an installed agent is its update (`update`: it must be installed already)."""
    if update and await asyncio.to_thread(_installed_row, engine, name) is None:
        raise NotFound(f"{name!r} is not installed from the marketplace: install it first")
    listing = (await load_catalogue(settings)).get(name)
    entry = choose_version(listing, version)
    if listing.agent.kind == "webhook":
        return await asyncio.to_thread(_install_webhook, engine, settings, actor, listing, entry)
    if listing.agent.kind != "python" or entry.package is None:
        raise InstallRefused(f"{name} is a {listing.agent.kind} agent: only python and webhook agents install")
    files = [entry.package, *entry.package.dependencies]
    wheels = []
    for file in files:
        try:
            data = await fetch_package(listing, file, settings)
        except PackageRefused as err:
            raise InstallRefused(f"{name} {entry.version}: {err}") from None
        wheels.append(Wheel(file.url.rsplit("/", 1)[-1], data))
    main_dist = canonicalize_name(wheels[0].dist()[0])
    if main_dist != canonicalize_name(entry.package.name):
        raise InstallRefused(f"the index names the package {entry.package.name}, its wheel is {main_dist}")
    return await asyncio.to_thread(
        _install_wheels,
        engine,
        settings,
        actor=actor,
        wheels=wheels,
        agent=name,
        index_name=listing.index,
        version=entry.version,
        changelog=entry.changelog,
    )


def _installed_row(engine: Engine, name: str) -> InstalledAgent | None:
    with Session(engine) as session:
        return session.get(InstalledAgent, name)


def _install_webhook(
    engine: Engine, settings: Settings, actor: Actor, listing: Listing, entry: AgentVersion
) -> Installed:
    agent = listing.agent
    if entry.webhook is None:
        raise InstallRefused(f"{agent.name} {entry.version} has no webhook target in its index")
    try:
        check_url(entry.webhook.url, OutboundPolicy.from_settings(settings))
    except (BlockedTarget, ValueError) as err:
        raise InstallRefused(f"{agent.name} {entry.version}: url: {err}") from None
    spec = AgentSpec(
        name=agent.name,
        version=entry.version,
        description=agent.description,
        capabilities=agent.capabilities,
        params_schema=entry.params_schema,
        default_risk=entry.default_risk,
        source="webhook",
    ).model_dump(mode="json", exclude={"source"})
    with agent_lock(engine, agent.name), Session(engine) as session:
        taken = _reserved(session, agent.name)
        if taken:
            raise InstallRefused(f"an agent named {agent.name!r} already exists here: {taken}")
        before = session.get(InstalledAgent, agent.name)
        if before is not None and before.kind != "webhook":
            raise InstallRefused(f"{agent.name} is installed as a {before.kind} agent; remove it first")
        hook = session.exec(select(WebhookAgent).where(WebhookAgent.name == agent.name)).first()
        secret = None
        if hook is None:
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            hook = WebhookAgent(name=agent.name, url=entry.webhook.url, secret=secret, created_by=actor.name)
        hook.url, hook.version, hook.description = entry.webhook.url, entry.version, agent.description
        hook.capabilities, hook.params_schema = list(agent.capabilities), entry.params_schema
        hook.default_risk, hook.timeout_seconds, hook.enabled = entry.default_risk, entry.webhook.timeout_seconds, True
        hook.updated_at = func.now()  # type: ignore[assignment]
        session.add(hook)
        old_spec = None if before is None else dict(before.spec)
        row = before or InstalledAgent(name=agent.name, kind="webhook", version=entry.version)
        previous = None if before is None else before.version
        row.version, row.index_name, row.spec, row.changelog = entry.version, listing.index, spec, entry.changelog
        row.previous_version, row.installed_by, row.wheels = previous, actor.name, []
        row.updated_at = func.now()  # type: ignore[assignment]
        session.add(row)
        action = _record(session, actor=actor, row=row, before=before, wheels=[])
        session.commit()
    installed = Installed(agent.name, "webhook", entry.version, previous, action, spec, entry.changelog, secret)
    installed.warnings = [f"{k} changed" for k in _diff(old_spec, spec)]
    return installed


def playbooks_using(session: Session, name: str) -> list[str]:
    """The playbooks whose latest version has a step running `name`."""
    return [
        row.playbook_id
        for row in latest_playbooks(session=session)
        if any(step.get("agent") == name for step in (row.definition or {}).get("steps", []))
    ]


def remove(engine: Engine, *, actor: Actor, name: str) -> InstalledAgent:
    """Uninstall an agent no playbook uses; workers restart without it. Its files stay until pruned (a worker still
    draining may run it)."""
    with agent_lock(engine, name), Session(engine) as session:
        row = session.get(InstalledAgent, name)
        if row is None:
            raise NotFound(f"{name!r} is not installed from the marketplace")
        users = playbooks_using(session, name)
        if users:
            raise Conflict(f"{name} is used by the playbook(s) {', '.join(users)}: change them first")
        if row.kind == "webhook":
            hook = session.exec(select(WebhookAgent).where(WebhookAgent.name == name)).first()
            if hook is not None:
                session.delete(hook)
        session.delete(row)
        session.add(AgentInstallEvent(agent=name, version=row.version, action="remove", actor=actor.name))
        record_audit(
            session,
            actor=actor,
            action="agent.remove",
            target_type="agent",
            target_id=name,
            before={"version": row.version, "kind": row.kind},
        )
        session.execute(text("SELECT pg_notify(:c, :p)"), {"c": AGENTS_CHANNEL, "p": f"remove:{name}"})
        session.commit()
        return row


def installed(session: Session) -> dict[str, InstalledAgent]:
    return {row.name: row for row in session.exec(select(InstalledAgent).order_by(col(InstalledAgent.name)))}


def install_counts(session: Session) -> dict[str, dict[str, int]]:
    """Installs and updates per agent and version (removals are not counted)."""
    rows = session.exec(
        select(AgentInstallEvent.agent, AgentInstallEvent.version, func.count())
        .where(col(AgentInstallEvent.action).in_(("install", "update")))
        .group_by(AgentInstallEvent.agent, AgentInstallEvent.version)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for agent, version, count in rows:
        counts.setdefault(agent, {})[version] = count
    return counts
