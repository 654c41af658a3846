"""Version directories of installed agents on a worker's disk: what pruning removes and what it must keep."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.marketplace import InstalledAgent
from services.agent_packages import MARKER, commit_dir, prune, version_dir


def _dir(path: Path, age_seconds: float) -> Path:
    path.mkdir(parents=True)
    (path / MARKER).write_text("")
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_prune_keeps_current_versions_and_recent_ones_and_removes_old_unused_ones(tmp_path: Path):
    current = InstalledAgent(name="disk_probe", kind="python", version="1.1.0", wheels=["b" * 64])
    kept = _dir(version_dir(tmp_path, "disk_probe", "1.1.0", "b" * 64), age_seconds=10 * 86_400)
    draining = _dir(version_dir(tmp_path, "disk_probe", "1.0.0", "a" * 64), age_seconds=60)  # a worker may run it
    old = _dir(version_dir(tmp_path, "disk_probe", "0.9.0", "c" * 64), age_seconds=2 * 86_400)
    removed_agent = _dir(version_dir(tmp_path, "gone_agent", "1.0.0", "d" * 64), age_seconds=2 * 86_400)
    stale_staging = _dir(tmp_path / ".staging-disk_probe-1.2.0-x", age_seconds=2 * 86_400)

    assert prune(tmp_path, [current]) == 3
    assert kept.exists() and draining.exists()
    assert not old.exists() and not removed_agent.exists() and not stale_staging.exists()
    assert prune(tmp_path / "missing", [current]) == 0


def test_two_workers_unpacking_the_same_version_both_end_with_one_complete_directory(tmp_path: Path):
    final = version_dir(tmp_path, "disk_probe", "1.0.0", "a" * 64)
    first, second = tmp_path / ".staging-1", tmp_path / ".staging-2"
    for staging in (first, second):
        staging.mkdir()
        (staging / "module.py").write_text(f"# {staging.name}\n")
    assert commit_dir(first, final) == final
    assert commit_dir(second, final) == final  # the second finds the first's complete directory
    assert (final / MARKER).exists() and (final / "module.py").read_text() == "# .staging-1\n"
    assert not first.exists() and not second.exists()
