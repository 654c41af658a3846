"""`agent-monitor playbooks dry-run ID [--var k=v] [--incident N] [--version V] [--wait]`: a playbook's true dry run
through the web API (POST /api/playbooks/{id}/dry-runs), with its report printed once it ends (--wait)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from cli.common import JsonOption, TokenOption, UrlOption, _api_url, _request, fail
from core.dry_run_report import summary_items

POLL_SECONDS = 0.5


def _variables(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise fail(f"--var {item}: write name=value", 2)
        found[name.strip()] = value  # typed by the server, from the variable's declaration
    return found


def _print_report(dry: dict[str, Any]) -> None:
    report = dry.get("report") or {}
    summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in summary_items(report.get("summary") or {}))
    typer.echo(f"DRY RUN #{dry['id']} of {dry['playbook_id']} v{dry['playbook_version']}: {dry['status']} — nothing "
               f"was changed" + (f" ({summary})" if summary else ""))  # fmt: skip
    if report.get("error"):
        typer.echo(f"  {report['error']}")
    for step in report.get("steps") or []:
        outcome = step["outcome"].replace("_", " ")
        typer.echo(f"{step['step_id']} ({step['agent']}): {outcome}" + (f" — {step['text']}" if step["text"] else ""))
        if step.get("approval"):
            typer.echo(f"    approval: {step['approval']}")
        if step.get("repeat"):
            typer.echo(f"    {step['repeat']}")


def dry_run(
    playbook_id: Annotated[str, typer.Argument(help="Playbook id")],
    var: Annotated[list[str] | None, typer.Option("--var", help="name=value (repeatable): a variable's value")] = None,
    incident: Annotated[
        int | None, typer.Option("--incident", min=1, help="A past incident as the context (read, never changed)")
    ] = None,
    version: Annotated[int | None, typer.Option("--version", min=0, help="A stored version (default: latest)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the end and print the report")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --wait waits at most")] = 600,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run the playbook as a real workflow in simulation mode: read-only agents read, commands, webhooks and the LLM
    only say what they would do, approvals say who would be asked. Nothing is changed; no incident is opened. With
    --wait, exits 1 when the dry run ends failed or cancelled."""
    base = _api_url(url)
    body: dict[str, Any] = {"variables": _variables(var or []), "incident_id": incident, "version": version}
    dry = _request("POST", f"{base}/api/playbooks/{playbook_id}/dry-runs", token, json=body)
    if not wait:
        typer.echo(json.dumps(dry, indent=2) if as_json else f"dry run #{dry['id']} started: {base}{dry['url']}")
        return
    deadline = time.monotonic() + timeout
    while not dry["ended"]:
        if time.monotonic() > deadline:
            raise fail(f"dry run #{dry['id']} has not ended after {timeout:g} s: {base}{dry['url']}")
        time.sleep(POLL_SECONDS)
        dry = _request("GET", f"{base}/api/dry-runs/{dry['id']}", token)
    if as_json:
        typer.echo(json.dumps(dry, indent=2))
    else:
        _print_report(dry)
        typer.echo(f"{base}{dry['url']}")
    if dry["status"] != "completed":
        raise typer.Exit(1)


def add_dry_run_command(group: typer.Typer) -> None:
    """`dry-run` in the playbooks group."""
    group.command("dry-run")(dry_run)
