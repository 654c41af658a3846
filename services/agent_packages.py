"""Agent packages on disk: a wheel (and its dependency wheels) installed with pip --require-hashes into its own
directory under PLUGIN_DIR, probed in a separate process, and put on the import path of workers.

Layout: PLUGIN_DIR/<agent>/<version>-<sha256[:12]>/ is what `pip install --target` made, plus a `.installed`
marker written last: a directory without it is an install that did not finish and is never used. Each version
has its own directory, so installing a new one never touches the one running; a failed install leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.agents import ENTRY_POINT_GROUP, plugin_classes
from core.marketplace import AgentPackage, InstalledAgent

log = logging.getLogger(__name__)
MARKER = ".installed"
PIP_TIMEOUT_SECONDS = 300
PROBE_TIMEOUT_SECONDS = 120
PRUNE_AFTER_SECONDS = 86_400.0


class PackageProblem(Exception):
    """A wheel that cannot be installed or does not provide the agent it should; the message is for people."""


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def dist(self) -> tuple[str, str]:
        """The wheel's distribution name (canonical) and version, from its file name."""
        try:
            name, version, _, _ = parse_wheel_filename(self.filename)
        except InvalidWheelFilename as err:
            raise PackageProblem(f"{self.filename!r} is not a wheel file name ({err})") from None
        return str(name), str(version)


@dataclass(frozen=True)
class Probed:
    """What an installed directory provides: its distributions and the agents its main wheel declares."""

    dists: dict[str, str]  # canonical name → version
    agents: list[dict[str, Any]]  # {"name", "value", "dist", "spec"} or {"name", "value", "dist", "error"}


def version_dir(plugin_dir: Path, agent: str, version: str, sha256: str) -> Path:
    return plugin_dir / agent / f"{version}-{sha256[:12]}"


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    # No user or site pip configuration (extra indexes, …): only the files we name, offline.
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def pip_install(wheels: list[Wheel], target: Path) -> None:
    """`pip install --require-hashes --no-deps --no-index --target` of exactly these wheels: pip checks each file
    against its sha256 again, fetches nothing and resolves nothing."""
    with tempfile.TemporaryDirectory(prefix="agent-wheels-") as tmp:
        lines = []
        for wheel in wheels:
            wheel.dist()  # a proper wheel file name, or a clear refusal
            path = Path(tmp) / Path(wheel.filename).name
            path.write_bytes(wheel.data)
            lines.append(f"{path} --hash=sha256:{wheel.sha256}")
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("\n".join(lines) + "\n")
        argv = [sys.executable, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "--no-index"]
        argv += ["--no-compile", "--target", str(target), "-r", str(requirements)]
        try:
            done = subprocess.run(  # noqa: S603 (argv, our own interpreter)
                argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, env=_pip_env(), check=False
            )
        except subprocess.TimeoutExpired:
            raise PackageProblem(f"pip did not finish within {PIP_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        raise PackageProblem(f"pip refused the wheel: {' '.join(lines[-3:])[:500] or f'exit {done.returncode}'}")


def probe(target: Path) -> Probed:
    """Import what `target` declares in the agent entry-point group, in a separate interpreter (a plugin's import
    side effects and crashes stay there), and read each agent's spec."""
    argv = [sys.executable, "-m", "services.plugin_probe", str(target)]
    try:
        done = subprocess.run(  # noqa: S603
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, cwd=target, check=False
        )
    except subprocess.TimeoutExpired:
        raise PackageProblem(f"importing the package took more than {PROBE_TIMEOUT_SECONDS} s") from None
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = " ".join(done.stderr.strip().splitlines()[-2:])[:500]
        raise PackageProblem(f"the package could not be inspected: {tail or f'exit {done.returncode}'}") from None
    return Probed(dists=found["dists"], agents=found["agents"])


def unpack(plugin_dir: Path, agent: str, version: str, wheels: list[Wheel]) -> tuple[Path, Probed]:
    """Install the wheels into a fresh staging directory and probe them; the caller checks the probe and then
    calls `commit_dir`. On any failure the staging directory is removed and nothing else changed."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{agent}-{version}-", dir=plugin_dir))
    try:
        pip_install(wheels, staging)
        return staging, probe(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def commit_dir(staging: Path, final: Path) -> Path:
    """Move a probed staging directory to its version directory and mark it complete (an existing complete one,
    from an earlier install of the same bytes, is kept)."""
    if (final / MARKER).exists():
        shutil.rmtree(staging, ignore_errors=True)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # an unfinished earlier attempt
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(staging, final)
    except OSError:
        if not (final / MARKER).exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another worker on this machine installed it meanwhile
        return final
    (final / MARKER).write_text("")
    return final


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def check_probe(probed: Probed, *, main: Wheel, agent: str | None) -> dict[str, Any]:
    """The one agent the main wheel must declare (named `agent`, when the index names it): its spec, or why not."""
    dist, version = main.dist()
    declared = [a for a in probed.agents if canonicalize_name(a["dist"]) == canonicalize_name(dist)]
    if not declared:
        raise PackageProblem(f"{dist} {version} declares no agent (entry-point group {ENTRY_POINT_GROUP!r})")
    if len(declared) > 1:
        names = ", ".join(sorted(a["name"] for a in declared))
        raise PackageProblem(f"{dist} {version} declares {len(declared)} agents ({names}): one package, one agent")
    (found,) = declared
    if agent is not None and found["name"] != agent:
        raise PackageProblem(f"{dist} {version} declares the agent {found['name']!r}, not {agent!r}")
    if "error" in found:
        raise PackageProblem(f"agent {found['name']} ({found['value']}) cannot be loaded: {found['error']}")
    spec: dict[str, Any] = found["spec"]
    return spec


# --- workers: the installed agents on this machine's import path -------------------------------------------------

_ON_PATH: list[str] = []  # the plugin directories this process put on sys.path


def _wheels_of(session: Session, row: InstalledAgent) -> list[Wheel]:
    packages = {p.sha256: p for p in session.exec(select(AgentPackage).where(col(AgentPackage.sha256).in_(row.wheels)))}
    wheels = []
    for sha in row.wheels:
        package = packages.get(sha)
        if package is None:
            raise PackageProblem(f"the wheel {sha[:12]}… of {row.name} {row.version} is missing from agent_packages")
        wheel = Wheel(package.filename, bytes(package.data))
        if wheel.sha256 != sha:  # the stored bytes changed: never install them
            raise PackageProblem(f"the stored wheel {package.filename} of {row.name} no longer has sha256 {sha}")
        wheels.append(wheel)
    return wheels


def installed_python_agents(engine: Engine) -> list[InstalledAgent]:
    with Session(engine) as session:
        return list(
            session.exec(select(InstalledAgent).where(InstalledAgent.kind == "python").order_by(InstalledAgent.name))
        )


def fingerprint(rows: Iterable[InstalledAgent]) -> tuple[tuple[str, str, str], ...]:
    """What a worker loaded: each Python agent's name, version and wheel; a change means a restart."""
    return tuple(sorted((row.name, row.version, row.wheels[0] if row.wheels else "") for row in rows))


def ensure_installed(engine: Engine, plugin_dir: Path, row: InstalledAgent) -> Path:
    """The agent's version directory on this machine, installing it from the stored wheels when missing (a worker
    on another machine than the web process that installed it)."""
    final = version_dir(plugin_dir, row.name, row.version, row.wheels[0])
    if (final / MARKER).exists():
        return final
    with Session(engine) as session:
        wheels = _wheels_of(session, row)
    staging, probed = unpack(plugin_dir, row.name, row.version, wheels)
    try:
        check_probe(probed, main=wheels[0], agent=row.name)
    except PackageProblem:
        discard(staging)
        raise
    return commit_dir(staging, final)


def environment_agents() -> set[str]:
    """Agents that packages pip installed into this environment declare (not the marketplace's, which a worker in
    this process may have put on the path)."""
    path = [entry for entry in sys.path if entry not in _ON_PATH]
    return {
        point.name
        for dist in importlib.metadata.distributions(path=path)
        for point in dist.entry_points
        if point.group == ENTRY_POINT_GROUP
    }


def _forget_modules(directory: str) -> None:
    """Drop modules imported from a plugin directory leaving the path, so another version can be imported."""
    prefix = directory.rstrip("/") + "/"
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]


def _take_off_path(directories: list[str]) -> None:
    for directory in directories:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)
        _forget_modules(directory)
        _ON_PATH.remove(directory)


def unload_plugins() -> None:
    """Take every installed agent's directory off the path again (a worker stopping inside a longer process)."""
    _take_off_path(list(_ON_PATH))
    importlib.invalidate_caches()
    plugin_classes.cache_clear()


def load_plugins(engine: Engine, plugin_dir: Path) -> tuple[tuple[str, str, str], ...]:
    """Put exactly the installed agents' version directories on sys.path (installing any that is missing here),
    so that `plugin_classes()` finds their entry points; returns the fingerprint loaded. An agent whose package
    cannot be installed here is logged and left out: the others still load."""
    rows = installed_python_agents(engine)
    wanted: list[str] = []
    for row in rows:
        try:
            wanted.append(str(ensure_installed(engine, plugin_dir, row)))
        except PackageProblem as err:
            log.error("installed agent %s %s is not loaded on this worker: %s", row.name, row.version, err)
    _take_off_path([d for d in _ON_PATH if d not in wanted])
    for directory in wanted:
        if directory not in _ON_PATH:
            sys.path.append(directory)
            _ON_PATH.append(directory)
    importlib.invalidate_caches()
    plugin_classes.cache_clear()
    try:
        prune(plugin_dir, rows)
    except OSError as err:  # another worker on this machine pruned the same directory first
        log.info("pruning %s: %s", plugin_dir, err)
    return fingerprint(rows)


def prune(plugin_dir: Path, rows: Iterable[InstalledAgent], *, older_than: float = PRUNE_AFTER_SECONDS) -> int:
    """Remove version directories (and unfinished staging ones) that no installed agent uses and that have not
    changed for `older_than` seconds: another worker on this machine may still be draining with one. Returns how
    many were removed."""
    keep = {version_dir(plugin_dir, r.name, r.version, r.wheels[0]) for r in rows if r.wheels}
    if not plugin_dir.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for entry in plugin_dir.iterdir():
        candidates = [entry] if entry.name.startswith(".staging-") else []
        if entry.is_dir() and not entry.name.startswith("."):
            candidates = [d for d in entry.iterdir() if d.is_dir()]
        for directory in candidates:
            if directory not in keep and directory.stat().st_mtime < cutoff:
                discard(directory)
                removed += 1
    return removed
