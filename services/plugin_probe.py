"""`python -m services.plugin_probe DIR`: what the distributions installed in DIR declare as agents, as one JSON
line on stdout. Run by services/agent_packages.py in its own process, so that importing a plugin (its side
effects, a crash, a hang) never happens in the web process that installs it."""

from __future__ import annotations

import json
import sys
from importlib.metadata import distributions
from typing import Any

from core.agents import ENTRY_POINT_GROUP, AgentSpec


def inspect(directory: str) -> dict[str, Any]:
    sys.path.insert(0, directory)
    dists: dict[str, str] = {}
    agents: list[dict[str, Any]] = []
    for dist in distributions(path=[directory]):
        name = dist.metadata["Name"] or ""
        dists[name] = dist.version
        for point in dist.entry_points:
            if point.group != ENTRY_POINT_GROUP:
                continue
            found: dict[str, Any] = {"name": point.name, "value": point.value, "dist": name}
            try:
                spec = point.load().spec
                if not isinstance(spec, AgentSpec):
                    raise TypeError(f"{point.value}.spec is not a core.agents.AgentSpec")
                if spec.name != point.name:
                    raise TypeError(f"{point.value}.spec is named {spec.name!r}, its entry point {point.name!r}")
                found["spec"] = spec.model_dump(mode="json", exclude={"source"})
            except BaseException as err:  # noqa: BLE001 (whatever a plugin raises is its problem, reported)
                found["error"] = f"{type(err).__name__}: {err}"[:500]
            agents.append(found)
    return {"dists": dists, "agents": agents}


def main() -> None:
    result = inspect(sys.argv[1])
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
