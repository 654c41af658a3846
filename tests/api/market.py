"""A real agent marketplace for tests: wheels built in the test (tests/wheels.py), an index describing them,
served by a real HTTP server on 127.0.0.1 (or read as a directory)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.peers import serving
from tests.wheels import build_wheel

AGENT_SOURCE = """
from typing import ClassVar

from activities.base import agent_result
from core.agents import AgentSpec, object_schema


class {cls}:
    spec: ClassVar[AgentSpec] = AgentSpec(
        name="{name}",
        version="{version}",
        description="Reports how full a disk is",
        capabilities=("investigation",),
        params_schema=object_schema({{"path": {{"type": "string", "pattern": "^/"}}}}),
        default_risk="{risk}",
        simulation="read",
    )

    def __init__(self, deps):
        self.deps = deps

    async def run(self, input):
        {body}
        path = input.params.get("path", "/")
        return agent_result(True, f"{name} {version} looked at {{path}}", data={{"v": "{version}"}})
"""


def agent_wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    risk: str = "low",
    body: str = "pass",
    module: str | None = None,
    extra_points: dict[str, str] | None = None,
) -> Path:
    """A wheel `acme-<name>` declaring the agent `name` (entry point), version `version`. `body` runs first in
    run() (e.g. waiting for a file); `module` replaces the whole module (a broken one)."""
    package = f"acme_{name}"
    source = module or AGENT_SOURCE.format(cls="Agent", name=name, version=version, risk=risk, body=body)
    points = {name: f"{package}:Agent", **(extra_points or {})}
    files = {f"{package}/__init__.py": source}
    return build_wheel(dest, f"acme-{name.replace('_', '-')}", version, files, {"agent_monitor.agents": points})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Market:
    root: Path
    agents: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    requests: list[str] = field(default_factory=list)

    def python_version(
        self, name: str, version: str, *, risk: str = "low", changelog: str = "", requires: str = "", **wheel: Any
    ) -> dict[str, Any]:
        path = agent_wheel(self.root / "wheels", name, version, risk=risk, **wheel)
        return {
            "version": version,
            "released_at": f"2026-11-{10 + len(version):02d}T00:00:00Z",
            "changelog": changelog,
            "requires": requires,
            "params_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
            "default_risk": risk,
            "simulation": "read",
            "package": {"name": f"acme-{name.replace('_', '-')}", "url": f"wheels/{path.name}", "sha256": sha256(path)},
        }

    def add(self, name: str, versions: list[dict[str, Any]], **fields: Any) -> None:
        entry = {
            "name": name,
            "description": fields.pop("description", f"The {name} agent"),
            "author": "Acme SRE",
            "license": "MIT",
            "capabilities": fields.pop("capabilities", ["investigation"]),
            "kind": fields.pop("kind", "python"),
            "versions": versions,
            **fields,
        }
        self.agents.append(entry)

    def write(self) -> Path:
        index = self.root / "index.json"
        index.write_text(json.dumps({"format": "agent-monitor-index/1", "name": "acme", "agents": self.agents}))
        return index


@contextmanager
def served(market: Market) -> Iterator[str]:
    """The market's directory over real HTTP; yields the index URL. Every request path is kept."""

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            market.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    with serving(functools.partial(Handler, directory=str(market.root))) as base:  # type: ignore[arg-type]
        market.url = f"{base}/index.json"
        yield market.url


def add_tampered(market: Market, name: str, **fields: Any) -> None:
    """An agent whose index entry vouches for other bytes than its wheel's: installing it must be refused."""
    entry = market.python_version(name, "1.0.0")
    entry["package"]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    market.add(name, [entry], **fields)


def webhook_version(version: str, url: str = "http://127.0.0.1:9/agent") -> dict[str, Any]:
    return {
        "version": version,
        "released_at": "2026-12-01T00:00:00Z",
        "webhook": {"url": url, "timeout_seconds": 5},
        "params_schema": {"type": "object"},
    }


def sample_market(root: Path, *, more: Callable[[Market], None] | None = None, **disk_probe: Any) -> Market:
    """The marketplace the API and page tests browse: disk_probe 1.0.0, 1.1.0 (risk medium) and 9.0.0 (for a future
    product; `disk_probe` adds index fields), a tampered shady_agent, a webhook pager_bridge, what `more` adds, and
    last an entry that is not valid (reported, left out)."""
    market = Market(root)
    versions = [
        market.python_version("disk_probe", "1.0.0", changelog="First release"),
        market.python_version("disk_probe", "1.1.0", risk="medium", changelog=disk_probe.pop("changelog_1_1", "")),
        market.python_version("disk_probe", "9.0.0", requires=">=99", changelog="For a future product"),
    ]
    market.add("disk_probe", versions, **{"tags": ["disk"], "downloads": 40, **disk_probe})
    add_tampered(market, "shady_agent", capabilities=["remediation"], downloads=500)
    market.add("pager_bridge", [webhook_version("2.0.0")], kind="webhook", capabilities=["notification"])
    if more is not None:
        more(market)
    market.agents.append({"name": "Not A Name!", "kind": "python", "capabilities": ["investigation"], "versions": []})
    market.write()
    return market
