"""`up`'s own guards, without starting a stack: one `up` per data dir, and `agent-monitor status` without one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli.stack import StackError, lock_data_dir
from core.supervision import up_running


def test_one_up_per_data_dir_and_the_lock_goes_with_its_holder(tmp_path):
    assert not up_running(tmp_path)
    held = lock_data_dir(tmp_path)
    try:
        assert up_running(tmp_path)
        with pytest.raises(StackError, match=rf"another `agent-monitor up` \(pid {os.getpid()}\) runs on {tmp_path}"):
            lock_data_dir(tmp_path)
    finally:
        os.close(held)
    assert not up_running(tmp_path)
    os.close(lock_data_dir(tmp_path))


def test_status_without_up_says_so_and_exits_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout.strip() == f"`agent-monitor up` is not running on {tmp_path}"
