"""`agent-monitor status`: what the supervisor of a running `up` sees (DATA_DIR/supervisor.json)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cli.common import settings_or_exit
from core.supervision import read_status


def _line(child: dict[str, Any]) -> str:
    state = child["state"]
    if state == "running":
        state = f"running (pid {child['pid']})"
    elif state == "restarting" and child.get("restart_at"):
        state = f"restarting at {child['restart_at']}"
    parts = [f"{child['name']:<9} {state}", f"restarts {child['restarts']}"]
    if child.get("last_exit"):
        parts.append(f"last exit {child['last_exit']} at {child['last_exit_at']}")
    if child.get("crash_loop"):
        parts.append("CRASH LOOP")
    return "  " + ", ".join(parts)


def status(as_json: Annotated[bool, typer.Option("--json", help="Print the raw status file")] = False) -> None:
    """What `up` runs on this DATA_DIR: each child's state, restarts and last exit. Exit 1 unless all run."""
    data_dir = settings_or_exit().data_dir
    body = read_status(data_dir)
    running = body["up_running"]
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    elif not running:
        typer.echo(f"`agent-monitor up` is not running on {data_dir}")
    else:
        typer.echo(f"up (pid {body.get('pid', '?')}) is {body.get('state', '?')}, as of {body.get('updated_at', '?')}")
        for child in body.get("children", []):
            typer.echo(_line(child))
    children = body.get("children", [])
    if not running or not children or any(c["state"] != "running" for c in children):
        raise typer.Exit(1)
