"""`agent-monitor worker` as a process of its own, for the scenarios that kill the worker: the same settings as the
in-process worker of the other scenarios, passed through its environment, and the monitors it starts as every
worker does (worker/monitors.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCError

from core.settings import Settings
from tests.scenarios.faultstate import ROOT


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a process read exactly these settings (secrets included: a test's own)."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = json.dumps([item.model_dump(mode="json") if hasattr(item, "model_dump") else str(item)
                               for item in value])  # fmt: skip
        else:
            text = str(value)
        env[name.upper()] = text
    return env


class WorkerProcess:
    """One `python -m cli.main worker` at a time; SIGKILL it, start another, stop the last one."""

    def __init__(self, settings: Settings, output: Path) -> None:
        self.settings = settings
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "a worker is running"
        env = {**os.environ, **settings_env(self.settings), "LOG_LEVEL": "WARNING"}
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI
                [sys.executable, "-m", "cli.main", "worker"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started += 1

    def kill(self) -> int:
        """SIGKILL: nothing of it runs on (the commands it started run in their own sessions). Its exit status."""
        assert self.process is not None and self.process.poll() is None, "no worker is running"
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(10)

    async def stop(self, temporal: Client) -> None:
        """Stop its monitor (which would otherwise wait for a worker for ever) and the process (SIGTERM: drain)."""
        try:
            await temporal.get_workflow_handle(self.settings.monitor_workflow_id).terminate(reason="test over")
        except RPCError:
            pass  # never started: the worker did not get that far
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
