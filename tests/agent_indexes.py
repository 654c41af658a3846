"""Agent indexes built in a test (docs/agents.md, "The index format"): an index directory with real wheels
(tests/wheels.py), signed with a real Ed25519 key, served over HTTP on 127.0.0.1 when a test needs it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.catalogue import INDEX_FORMAT, public_key_text, sign_index
from tests.peers import serving
from tests.wheels import build_wheel


def agent_module(
    class_name: str, agent_name: str, *, version: str = "1.0.0", capability: str = "investigation", summary: str = ""
) -> str:
    """The source of a module holding one agent of the agent protocol that answers with `summary`."""
    return f"""from core.agents import AgentSpec
from core.payloads import AgentResult


class {class_name}:
    spec = AgentSpec(
        name={agent_name!r}, version={version!r}, capabilities=({capability!r},), source="plugin", simulation="read"
    )

    def __init__(self, deps=None):
        self.deps = deps

    async def run(self, input):
        return AgentResult(ok=True, summary={summary or f"{agent_name} ran"!r})
"""


def agent_wheel(dest_dir: Path, agent_name: str, version: str, *, dist_name: str = "", summary: str = "") -> Path:
    """A real wheel declaring one agent (entry point `agent_name` in agent_monitor.agents)."""
    dist_name = dist_name or f"acme-{agent_name.replace('_', '-')}"
    module = f"acme_{agent_name}"
    source = agent_module("Agent", agent_name, version=version, summary=summary or f"{agent_name} {version} ran")
    return build_wheel(
        dest_dir,
        dist_name,
        version,
        {f"{module}/__init__.py": source},
        {"agent_monitor.agents": {agent_name: f"{module}:Agent"}},
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def python_entry(
    name: str, versions: Mapping[str, Path], index_dir: Path, *, capability: str = "investigation", **fields: Any
) -> dict[str, Any]:
    """An index entry for a python agent: version → its wheel, each listed by its path relative to the index."""
    return {
        "name": name,
        "capabilities": [capability],
        "kind": "python",
        **fields,
        "versions": [
            {
                "version": version,
                "package": {
                    "name": f"acme-{name.replace('_', '-')}",
                    "url": wheel.relative_to(index_dir).as_posix(),
                    "sha256": sha256_of(wheel),
                },
            }
            for version, wheel in versions.items()
        ],
    }


def write_index(index_dir: Path, agents: list[dict[str, Any]], *, name: str = "acme", **extra: Any) -> Path:
    """Write index_dir/index.json listing these agent entries; returns its path."""
    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir / "index.json"
    path.write_text(json.dumps({"format": INDEX_FORMAT, "name": name, "agents": agents, **extra}, indent=2))
    return path


@dataclass
class Signer:
    """An Ed25519 key pair: `public_key` is what AGENT_INDEXES configures."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_key(self) -> str:
        return public_key_text(self.key)

    def sign(self, index: Path) -> Path:
        """Write index.sig next to the index; returns its path."""
        signature = index.with_name(index.name + ".sig")
        signature.write_bytes(sign_index(index.read_bytes(), self.key))
        return signature


@dataclass
class Served:
    base: str  # http://127.0.0.1:<port> (the directory's root)
    requests: list[str] = field(default_factory=list)  # the paths asked for, in order


@contextmanager
def serve_directory(root: Path) -> Iterator[Served]:
    """A real HTTP server on 127.0.0.1 serving the files under root (404 for the others); counts requests."""
    served = Served(base="")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:  # noqa: N802
            served.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as base:
        served.base = base
        yield served
