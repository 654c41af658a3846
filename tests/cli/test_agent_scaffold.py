"""`agent-monitor agents new` and `agents build`: each template scaffolds a project that passes its own tests as it
is (run in a separate interpreter, the way its author runs them), the Python one builds offline into a wheel
that pip installs and whose entry point loads the agent, and the commands refuse what they must in one line."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import zipfile
from importlib.metadata import distributions
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.routes.webhook_agents import WebhookAgentCreate
from cli.agent_scaffold import ScaffoldError, build_wheel, register, scaffold, sha256_of
from core.agent_templates import KINDS, SAMPLE_NAME, render, templates
from core.agents import ENTRY_POINT_GROUP, AgentSpec


def run_own_tests(project: Path) -> subprocess.CompletedProcess[str]:
    """The scaffolded project's tests, as its author runs them from its directory (importable without install)."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    for variable in ("NO_PROXY", "no_proxy"):  # their local servers, never through a proxy CI may set
        env[variable] = ",".join(filter(None, [env.get(variable), "127.0.0.1", "localhost"]))
    command = [sys.executable, "-m", "pytest", str(project / "tests"), "-q", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("capability", "webhook", "passed"),
    [("investigation", False, 6), ("remediation", False, 6), ("verification", True, 5), ("notification", True, 5)],
)
def test_a_scaffolded_agent_passes_its_own_tests(tmp_path, capability, webhook, passed):
    project = scaffold("edge_probe", capability, webhook=webhook, dest=tmp_path / "edge_probe")
    done = run_own_tests(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{passed} passed" in done.stdout


def test_the_python_agent_builds_a_wheel_pip_installs_and_its_entry_point_loads(tmp_path):
    project = scaffold("edge_probe", "investigation", webhook=False, dest=tmp_path / "project")
    wheel = build_wheel(project, tmp_path / "dist")
    assert wheel.name == "agent_monitor_edge_probe-0.1.0-py3-none-any.whl"
    assert f"dist/{wheel.name}" in (project / "README.md").read_text()  # its publishing steps name it
    with zipfile.ZipFile(wheel) as archive:
        assert archive.testzip() is None
        assert not [name for name in archive.namelist() if name.startswith("tests/")]  # tests stay out
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=120, check=False)
    assert installed.returncode == 0, installed.stderr

    (dist,) = distributions(path=[str(site)])
    assert dist.metadata["Name"] == "agent-monitor-edge-probe" and dist.version == "0.1.0"
    (point,) = dist.entry_points.select(group=ENTRY_POINT_GROUP)
    assert point.name == "edge_probe" and point.value == "edge_probe_agent.agent:EdgeProbeAgent"
    sys.path.insert(0, str(site))
    try:
        importlib.invalidate_caches()
        cls = point.load()
        assert isinstance(cls.spec, AgentSpec) and cls.spec.name == "edge_probe"
        assert Path(sys.modules[cls.__module__].__file__ or "").is_relative_to(site)  # the installed copy
    finally:
        sys.path.remove(str(site))
        for module in ("edge_probe_agent", "edge_probe_agent.agent"):
            sys.modules.pop(module, None)


def test_the_webhook_agent_s_registration_is_what_the_api_takes(tmp_path):
    project = scaffold("edge_probe", "remediation", webhook=True, dest=tmp_path / "hook")
    registration = WebhookAgentCreate.model_validate(json.loads((project / "agent.json").read_text()))
    assert registration.name == "edge_probe" and registration.capabilities == ["remediation"]
    assert registration.default_risk == "medium"
    notify = {f.path: f.text for f in render("webhook", "edge_probe", "notification")}
    assert json.loads(notify["agent.json"])["default_risk"] == "low"  # acts, but needs no approval by default


def test_the_page_s_templates_are_the_files_new_writes(tmp_path):
    shown = {template.kind: template for template in templates()}
    assert set(shown) == set(KINDS)
    for kind, template in shown.items():
        assert template.title and template.description
        assert template.command.startswith(f"agent-monitor agents new {SAMPLE_NAME} --capability investigation")
        assert template.command.endswith("--webhook") == (kind == "webhook")
        project = scaffold(SAMPLE_NAME, "investigation", webhook=kind == "webhook", dest=tmp_path / kind)
        written = sorted(str(path.relative_to(project)) for path in project.rglob("*") if path.is_file())
        assert written == [file.path for file in template.files]
        for file in template.files:
            assert (project / file.path).read_text() == file.text
    paths = {file.path for file in shown["python"].files}
    assert {"pyproject.toml", "README.md", f"{SAMPLE_NAME}_agent/agent.py", "tests/test_agent.py"} <= paths
    assert "agent.json" in {file.path for file in shown["webhook"].files}


def test_a_description_is_one_line_everywhere():
    files = {f.path: f.text for f in render("python", "edge_probe", "monitoring", description='Says "hi"\n  twice.')}
    assert 'description = "Says \\"hi\\" twice."' in files["pyproject.toml"]
    assert 'description="Says \\"hi\\" twice."' in files["edge_probe_agent/agent.py"]
    assert '`edge_probe` (monitoring): Says "hi" twice.\n' in files["README.md"]


def test_scaffold_refuses_a_bad_name_a_built_in_name_and_a_used_directory(tmp_path):
    with pytest.raises(ScaffoldError, match="invalid agent name 'Edge-Probe'"):
        scaffold("Edge-Probe", "investigation", webhook=False, dest=tmp_path / "a")
    with pytest.raises(ScaffoldError, match="'investigate_logs' is the name of a built-in agent"):
        scaffold("investigate_logs", "investigation", webhook=False, dest=tmp_path / "b")
    (tmp_path / "c").mkdir()
    scaffold("edge_probe", "investigation", webhook=False, dest=tmp_path / "c")  # an empty directory is fine
    assert not list(tmp_path.glob("[ab]"))


@pytest.fixture
def cli() -> typer.Typer:
    agents = typer.Typer()
    register(agents)
    return agents


def test_new_then_build_from_the_command_line(cli, tmp_path):
    runner = CliRunner()
    made = runner.invoke(cli, ["new", "edge_probe", "--capability", "verification", "--dir", str(tmp_path / "p")])
    assert made.exit_code == 0, made.output
    assert made.stdout.startswith(f"created {tmp_path / 'p'} (Python agent package edge_probe, verification)\n")
    assert 'simulation="read"' in (tmp_path / "p" / "edge_probe_agent" / "agent.py").read_text()

    built = runner.invoke(cli, ["build", str(tmp_path / "p"), "--out", str(tmp_path / "out")])
    assert built.exit_code == 0, built.output
    wheel_line, sha_line = built.stdout.splitlines()
    wheel = Path(wheel_line)
    assert wheel.parent == (tmp_path / "out").resolve() and wheel.suffix == ".whl"
    assert sha_line == f"sha256 {sha256_of(wheel)}"

    webhook = runner.invoke(
        cli, ["new", "edge_hook", "--capability", "notification", "--webhook", "--dir", str(tmp_path / "w")]
    )
    assert webhook.exit_code == 0, webhook.output
    assert (tmp_path / "w" / "edge_hook_webhook.py").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["new", "Bad-Name", "--capability", "investigation"], "error: invalid agent name 'Bad-Name'"),
        (["new", "edge_probe", "--capability", "healing"], "error: invalid capability 'healing': one of monitoring"),
        (["new", "monitor", "--capability", "monitoring"], "error: 'monitor' is the name of a built-in agent"),
        (["new", "edge_probe", "--capability", "investigation", "--dir", "{used}"], "already exists and is not an"),
        (["build", "{empty}"], "error: cannot read"),
    ],
)
def test_refusals_are_one_line_and_exit_1(cli, tmp_path, args, message):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    args = [arg.format(used=tmp_path / "used", empty=tmp_path / "empty") for arg in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine" and list((tmp_path / "used").iterdir())
