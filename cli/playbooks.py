"""`agent-monitor playbooks list | show | export | import | preview` through the web API with the caller's token
(the same sharing and edit rights as in the browser); versions, diff, restore, fork and share come from
cli/playbook_versions.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from cli.common import JsonOption, TokenOption, UrlOption, _api_url, _request, fail
from cli.playbook_versions import add_version_commands

playbooks_app = typer.Typer(no_args_is_help=True, help="List, show, export, import and preview playbooks.")

PlaybookArg = Annotated[str, typer.Argument(help="Playbook id")]
VersionOption = Annotated[int | None, typer.Option("--version", min=0, help="A version (default: the latest)")]
FORMATS = ("json", "yaml")
SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


@playbooks_app.command("list")
def list_playbooks(
    incident_type: Annotated[str | None, typer.Option("--type", help="Only this incident type's")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The latest version of every playbook you may see."""
    params = {"incident_type": incident_type} if incident_type else {}
    rows: Any = _request("GET", f"{_api_url(url)}/api/playbooks", token, params=params)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        typer.echo("no playbooks")
    for row in rows:
        typer.echo(f"{row['id']:<32} v{row['version']:<4} {row['incident_type']:<20} {row['name']}")


@playbooks_app.command("show")
def show(
    playbook_id: PlaybookArg,
    version: VersionOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A playbook's variables and steps (dependencies, condition, approval)."""
    params = {"version": version} if version is not None else {}
    playbook = _request("GET", f"{_api_url(url)}/api/playbooks/{playbook_id}", token, params=params)
    if as_json:
        typer.echo(json.dumps(playbook, indent=2, ensure_ascii=False))
        return
    typer.echo(
        f"{playbook['id']} v{playbook['version']}: {playbook['name']} (incident type {playbook['incident_type']})"
    )
    for name, spec in playbook.get("variables", {}).items():
        if isinstance(spec, dict):
            typer.echo(f"  var {name}: {spec.get('type', 'string')} = {json.dumps(spec.get('default'))}")
        else:
            typer.echo(f"  var {name} = {json.dumps(spec)}")
    for step in playbook["steps"]:
        after = f" after {', '.join(step['depends_on'])}" if step["depends_on"] else ""
        when = f" when {step['when']}" if step.get("when") else ""
        gate = " (approval)" if step.get("requires_approval") else ""
        typer.echo(f"  {step['id']}: {step['agent']}{after}{when}{gate}")


@playbooks_app.command("export")
def export(
    playbook_id: PlaybookArg,
    fmt: Annotated[str, typer.Option("--format", help="json or yaml")] = "json",
    version: VersionOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout)")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Write a playbook version as JSON or YAML, exactly as stored (import it elsewhere as it is)."""
    if fmt not in FORMATS:
        raise fail(f"--format must be json or yaml, not {fmt}", 2)
    params: dict[str, Any] = {"format": fmt} | ({"version": version} if version is not None else {})
    text = _text("GET", f"{_api_url(url)}/api/playbooks/{playbook_id}/export", token, params=params)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")


@playbooks_app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(help="A .json, .yaml or .yml file: one playbook or a bundle")],
    fmt: Annotated[str | None, typer.Option("--format", help="json or yaml (default: from the file name)")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Import playbooks: all of them or, if anything is wrong, none (every problem is listed with its path)."""
    kind = fmt or SUFFIXES.get(path.suffix.lower())
    if kind not in FORMATS:
        raise fail(f"{path}: say --format json or --format yaml", 2)
    try:
        content = path.read_bytes()
    except OSError as err:
        raise fail(f"{path}: {err.strerror or err}", 2) from None
    headers = {"Content-Type": f"application/{kind}"}
    result = _request("POST", f"{_api_url(url)}/api/playbooks/import", token, content=content, headers=headers)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for item in result["playbooks"]:
        typer.echo(f"{item['id']} v{item['version']}: {item['status']} ({item['reason']})")


@playbooks_app.command("preview")
def preview(
    playbook_id: PlaybookArg,
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="name=value (repeatable); incident.severity=P1 and the like change the incident"),
    ] = None,
    incident: Annotated[int | None, typer.Option("--incident", min=1, help="A past incident as the context")] = None,
    version: VersionOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Each step as a run would fill it in, the placeholders nobody fills, and the steps that would not run."""
    variables: dict[str, str] = {}
    for item in var or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise fail(f"--var {item}: write name=value", 2)
        variables[name.strip()] = value
    body: dict[str, Any] = {"variables": variables, "incident_id": incident}
    params = {"version": version} if version is not None else {}
    answer = _request("POST", f"{_api_url(url)}/api/playbooks/{playbook_id}/preview", token, json=body, params=params)
    if as_json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{answer['playbook_id']} v{answer['version']} for {_incident(answer['incident'])}")
    for step in answer["steps"]:
        typer.echo(f"{step['id']} ({step['agent']}): {step['outcome']}" + (f" — {step['why']}" if step["why"] else ""))
        for line in step["instructions"].splitlines():
            typer.echo(f"    {line}")
        if step["params"]:
            typer.echo(f"    params: {json.dumps(step['params'], ensure_ascii=False)}")
        for flag, names in (("unknown variables", step["unknown_variables"]), ("not variables", step["not_variables"])):
            if names:
                typer.echo(f"    {flag}: {', '.join(names)}")
        for problem in step["problems"]:
            typer.echo(f"    problem: {problem}")
    unreachable = answer["unreachable"]
    typer.echo(
        f"{len(unreachable)} step(s) would not run: {', '.join(u['step'] for u in unreachable)}"
        if unreachable
        else "every step would run"
    )


def _incident(incident: dict[str, Any]) -> str:
    number = f"incident #{incident['incident_id']}" if incident.get("incident_id") else "the sample incident"
    return f"{number} ({incident.get('service')}, {incident.get('severity')})"


def _text(method: str, url: str, token: str | None, **kwargs: Any) -> str:
    """A text answer (an export file); errors as one line, as _request's."""
    token = token or os.environ.get("AGENT_MONITOR_TOKEN")
    if not token:
        raise fail("no API token: set AGENT_MONITOR_TOKEN or pass --token (create one: agent-monitor tokens create)")
    try:
        response = httpx.request(method, url, timeout=30, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as err:
        raise fail(f"cannot reach Agent Monitor at {url} ({err}); is `agent-monitor up` running?") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text[:300])
        except ValueError:
            detail = response.text[:300]
        raise fail(str(detail))
    return response.text


add_version_commands(playbooks_app)  # versions, diff, restore, fork, share: after ours in --help
