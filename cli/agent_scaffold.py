"""`agent-monitor agents new` and `agents build`: scaffold an agent from a template (core/agent_templates) and build
a Python agent's wheel offline.

The wheel is built in this process with flit_core (the templates' build backend, one of our dependencies), so a
build needs no network and no pip build isolation.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Annotated

import typer

from core.agent_templates import CAPABILITIES, TemplateError, render

FLIT_BACKEND = "flit_core.buildapi"


class ScaffoldError(Exception):
    """Why an agent cannot be scaffolded or built (one line)."""


def _builtin_names() -> set[str]:
    from activities.registry import BUILTIN_CLASSES  # slow to import: only when scaffolding
    from core.agents import BUILTIN_SPECS

    return set(BUILTIN_SPECS) | {cls.spec.name for cls in BUILTIN_CLASSES}


def scaffold(name: str, capability: str, *, webhook: bool, dest: Path, description: str = "") -> Path:
    """Write the python (or webhook) template for agent `name` into `dest`, which must not exist or be empty.
    Returns `dest`."""
    try:
        files = render("webhook" if webhook else "python", name, capability, description=description)
    except TemplateError as err:
        raise ScaffoldError(str(err)) from None
    if name in _builtin_names():
        raise ScaffoldError(f"{name!r} is the name of a built-in agent: choose another")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ScaffoldError(f"{dest} already exists and is not an empty directory")
    for file in files:
        path = dest / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file.text, encoding="utf-8")
    return dest


def build_wheel(project_dir: Path, out_dir: Path) -> Path:
    """Build the wheel of the flit_core project in `project_dir` into `out_dir`; its path."""
    pyproject = project_dir / "pyproject.toml"
    try:
        backend = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("build-system", {}).get("build-backend")
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ScaffoldError(f"cannot read {pyproject}: {err}") from None
    if backend != FLIT_BACKEND:
        raise ScaffoldError(f"{pyproject} does not build with {FLIT_BACKEND} (build it with `pip wheel --no-deps`)")
    # flit_core.buildapi.build_wheel builds the project in the current directory; make_wheel_in, which it calls,
    # takes the project's path, so building never changes this process's directory.
    from flit_core.wheel import make_wheel_in

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        built = make_wheel_in(pyproject.resolve(), out_dir.resolve())
    except Exception as err:  # flit_core's own errors name what is wrong with the project
        raise ScaffoldError(f"cannot build {project_dir}: {err}") from None
    return Path(built.file)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def new(
    name: Annotated[str, typer.Argument(help="The agent's name: lowercase letters, digits and _ (playbooks use it)")],
    capability: Annotated[str, typer.Option(help=f"What the agent does: one of {', '.join(CAPABILITIES)}")],
    webhook: Annotated[
        bool, typer.Option("--webhook", help="A webhook agent service (runs elsewhere) instead of a Python package")
    ] = False,
    directory: Annotated[Path | None, typer.Option("--dir", help="Where to create it (default: ./NAME)")] = None,
    description: Annotated[str, typer.Option(help="One line saying what it does")] = "",
) -> None:
    """Scaffold an agent from a template: its spec, run method, tests and README, passing its tests as it is."""
    dest = directory or Path(name)
    try:
        scaffold(name, capability, webhook=webhook, dest=dest, description=description)
    except ScaffoldError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    kind = "webhook agent service" if webhook else "Python agent package"
    typer.echo(f"created {dest} ({kind} {name}, {capability})")
    typer.echo(f"next: cd {dest} && python -m pytest tests   (then see README.md)")


def build(
    directory: Annotated[Path, typer.Argument(help="The agent's project directory")] = Path(),
    out: Annotated[Path | None, typer.Option(help="Where to put the wheel (default: DIR/dist)")] = None,
) -> None:
    """Build an agent's wheel offline (flit_core, in process); prints its path and sha256 for an index."""
    try:
        wheel = build_wheel(directory, out or directory / "dist")
    except ScaffoldError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(wheel))
    typer.echo(f"sha256 {sha256_of(wheel)}")


def register(app: typer.Typer) -> None:
    """Add `new` and `build` to the `agents` command group."""
    app.command("new")(new)
    app.command("build")(build)
