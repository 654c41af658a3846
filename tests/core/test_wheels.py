"""Reading a wheel without installing it (core/wheels.py), on wheels tests/wheels.py builds — which pip installs
with --require-hashes as the marketplace's installer does."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile

import pytest

from core.wheels import NotAWheel, wheel_info
from tests.wheels import build_wheel

AGENT = "acme_disk.agent:DiskCleanupAgent"


def test_a_wheel_says_its_name_version_and_the_agents_it_declares(tmp_path):
    wheel = build_wheel(
        tmp_path,
        "acme-disk.cleanup",
        "1.2.0-rc.1",
        {"acme_disk/__init__.py": "", "acme_disk/agent.py": "class DiskCleanupAgent: ...\n"},
        {"agent_monitor.agents": {"disk_cleanup": AGENT}, "console_scripts": {"acme-disk": "acme_disk.agent:main"}},
    )
    assert wheel.name == "acme_disk_cleanup-1.2.0rc1-py3-none-any.whl"
    info = wheel_info(wheel.read_bytes())
    assert (info.name, info.version, info.agents) == ("acme-disk.cleanup", "1.2.0-rc.1", {"disk_cleanup": AGENT})
    assert info.entry_points["console_scripts"] == {"acme-disk": "acme_disk.agent:main"}
    # The same inputs give the same bytes: a wheel's sha256 can be written into an index before it is rebuilt.
    again = build_wheel(tmp_path / "again", "acme-disk.cleanup", "1.2.0-rc.1", {"acme_disk/__init__.py": ""})
    first = build_wheel(tmp_path / "first", "acme-disk.cleanup", "1.2.0-rc.1", {"acme_disk/__init__.py": ""})
    assert again.read_bytes() == first.read_bytes()


def test_what_is_not_a_wheel_is_refused_in_one_line(tmp_path):
    with pytest.raises(NotAWheel, match="not a wheel: not a zip archive"):
        wheel_info(b"PK but not really")
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("acme/__init__.py", "")
    with pytest.raises(NotAWheel, match="0 top-level .dist-info directories, expected one"):
        wheel_info(plain.read_bytes())
    no_agents = build_wheel(tmp_path, "acme-tools", "1.0", {"acme_tools/__init__.py": ""})
    assert wheel_info(no_agents.read_bytes()).agents == {}


def test_pip_installs_a_built_wheel_with_require_hashes_and_its_entry_point_loads(tmp_path):
    wheel = build_wheel(
        tmp_path / "dist",
        "acme-disk-cleanup",
        "1.0.0",
        {"acme_disk/__init__.py": "class DiskCleanupAgent:\n    answer = 42\n"},
        {"agent_monitor.agents": {"disk_cleanup": "acme_disk:DiskCleanupAgent"}},
    )
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"acme-disk-cleanup @ {wheel.as_uri()} --hash=sha256:{sha}\n")
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--require-hashes", "--quiet"]
    done = subprocess.run(
        [*pip, "--target", str(target), "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    load = (
        "from importlib.metadata import entry_points; "
        "[ep] = entry_points(group='agent_monitor.agents', name='disk_cleanup'); print(ep.load().answer)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", load], env={"PYTHONPATH": str(target)}, capture_output=True, text=True, timeout=60
    )
    assert ran.stdout == "42\n", ran.stderr
