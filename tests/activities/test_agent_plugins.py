"""Agents added by an installed package (the `agent_monitor.agents` entry points), as pip lays one out: listed
by the API, its params checked against its schema when a playbook is stored, its default risk applied, and run
by the real worker. A broken plugin is left out without taking anything down."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.agents import plugin_classes
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, step
from worker.runner import incident_worker

PLUGIN = """
from typing import ClassVar

from activities.base import agent_result
from core.agents import AgentSpec, object_schema


class DiskCleanupAgent:
    spec: ClassVar[AgentSpec] = AgentSpec(
        name="disk_cleanup",
        version="0.3.0",
        description="Frees disk space under a path",
        capabilities=("remediation",),
        params_schema=object_schema({"path": {"type": "string", "pattern": "^/"}}, required=("path",)),
        default_risk="medium",
    )

    def __init__(self, deps):
        self.deps = deps

    async def run(self, input):
        return agent_result(True, f"cleaned {input.params['path']}", data={"freed_mb": 512})
"""


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    """A package with one good and one broken entry point, on sys.path the way site-packages holds it."""
    site = tmp_path / "site"
    (site / "acme_agents").mkdir(parents=True)
    (site / "acme_agents" / "__init__.py").write_text(PLUGIN)
    dist = site / "acme_agents-0.3.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-agents\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text(
        "[agent_monitor.agents]\ndisk_cleanup = acme_agents:DiskCleanupAgent\nbroken = acme_agents:Missing\n"
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugin_classes.cache_clear()
    yield
    sys.path.remove(str(site))
    sys.modules.pop("acme_agents", None)
    plugin_classes.cache_clear()


async def test_an_installed_plugin_agent_is_listed_checked_and_run(
    installed_plugin, api, temporal_client, engine, settings, caplog
):
    with caplog.at_level(logging.ERROR, logger="core.agents"):
        listed = (await api.get("/api/agents")).json()
    by_name = {a["name"]: a for a in listed}
    assert by_name["disk_cleanup"]["source"] == "plugin" and by_name["disk_cleanup"]["version"] == "0.3.0"
    assert by_name["disk_cleanup"]["default_risk"] == "medium"
    assert by_name["noop"]["source"] == "builtin"
    assert "broken" not in by_name
    assert "agent plugin broken (acme_agents:Missing) is not loaded" in caplog.text

    stored = await api.post(
        "/api/playbooks",
        json={"id": "bad-plugin-params", "name": "x", "steps": [step("clean", "disk_cleanup", params={"path": "tmp"})]},
    )
    assert stored.status_code == 422
    assert "step clean: params.path: 'tmp' does not match '^/'" in stored.text
    missing = await api.post(
        "/api/playbooks", json={"id": "no-path", "name": "x", "steps": [step("clean", "disk_cleanup")]}
    )
    assert missing.status_code == 422 and "'path' is a required property" in missing.text

    incident = await run_playbook(api, [step("clean", "disk_cleanup", params={"path": "/var/tmp"})])
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    (clean,) = state.steps
    assert clean.output is not None and clean.output["summary"] == "cleaned /var/tmp"
    assert clean.output["data"]["freed_mb"] == 512
    playbook = (await api.get(f"/api/incidents/{incident['id']}")).json()
    assert playbook["status"] == "resolved"


async def test_unknown_agents_are_a_404_and_a_422(api):
    assert (await api.get("/api/agents/nope")).status_code == 404
    stored = await api.post("/api/playbooks", json={"id": "ghost", "name": "x", "steps": [step("a", "ghost_agent")]})
    assert stored.status_code == 422 and "step a: unknown agent 'ghost_agent'" in stored.text
