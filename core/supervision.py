"""What `agent-monitor up` tells the rest of the machine about its children: DATA_DIR/supervisor.json (written by
cli/supervisor.py) and DATA_DIR/up.lock (held while `up` runs). `agent-monitor status` and the overview read them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

STATUS_FILE = "supervisor.json"
LOCK_FILE = "up.lock"
PROCESS_EVENTS = ("process.exited", "process.restarted")  # events rows `up` publishes (kind; data: the child)


def up_running(data_dir: Path) -> bool:
    """An `up` holds DATA_DIR/up.lock while it runs (the kernel drops the lock when it dies, however it dies)."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_status(data_dir: Path) -> dict[str, Any]:
    """The last status `up` wrote (empty when there is none or it is unreadable), with `up_running`."""
    body: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((data_dir / STATUS_FILE).read_text())
        if isinstance(loaded, dict):
            body = loaded
    return {**body, "up_running": up_running(data_dir)}


def supervised_children(data_dir: Path) -> list[dict[str, Any]] | None:
    """The children of the `up` running on data_dir, or None when no `up` runs there (a scaled-out process)."""
    status = read_status(data_dir)
    if not status["up_running"]:
        return None
    children = status.get("children")
    return [c for c in children if isinstance(c, dict)] if isinstance(children, list) else []
