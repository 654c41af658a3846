"""`agent-monitor playbooks versions | diff | restore | fork | share`: a playbook's history, the diff of two
versions, restoring one, forking one under a new id, and who owns and sees it — through the web API, with the
caller's token (so the same sharing rules apply as in the browser).

`add_version_commands(group)` adds them to the `playbooks` group (cli/playbooks.py holds list, show, export,
import and preview)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from cli.common import JsonOption, TokenOption, UrlOption, _api_url, _request

PlaybookArg = Annotated[str, typer.Argument(help="Playbook id")]
MessageOption = Annotated[str | None, typer.Option("--message", "-m", help="What this version changes (≤ 500)")]


def versions(
    playbook_id: PlaybookArg, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Every version, oldest first: number, author, time, message and what it was forked from."""
    rows: Any = _request("GET", f"{_api_url(url)}/api/playbooks/{playbook_id}/versions", token)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        fork = row["forked_from"]
        origin = f"  (forked from {fork['id']} v{fork['version']})" if fork else ""
        typer.echo(
            f"v{row['version']:<4} {row['created_at'][:19]}  {row['author'] or '-':<16} {row['message'] or ''}{origin}"
        )


def diff(
    playbook_id: PlaybookArg,
    a: Annotated[int, typer.Argument(help="The older version")],
    b: Annotated[int, typer.Argument(help="The newer version")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Unified diff of two versions' canonical YAML (sorted keys, the version number left out)."""
    answer = _request("GET", f"{_api_url(url)}/api/playbooks/{playbook_id}/diff", token, params={"a": a, "b": b})
    lines = answer["lines"]
    typer.echo("\n".join(lines) if lines else f"v{a} and v{b} of {playbook_id} are the same")


def restore(
    playbook_id: PlaybookArg,
    version: Annotated[int, typer.Argument(help="The version to bring back (as a new version)")],
    message: MessageOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Store a new version equal to VERSION (message "restored from vN" unless given)."""
    body: dict[str, Any] = {"version": version} | ({"message": message} if message is not None else {})
    stored = _request("POST", f"{_api_url(url)}/api/playbooks/{playbook_id}/restore", token, json=body)
    typer.echo(f"{playbook_id} v{stored['version']}: {stored['saved']['message']}")


def fork(
    playbook_id: PlaybookArg,
    new_id: Annotated[str, typer.Argument(help="The fork's id")],
    version: Annotated[int | None, typer.Option("--version", help="The version to copy (default: the latest)")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The fork's name (default: '<name> (fork)')")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Its owner team (default: the source's)")] = None,
    message: MessageOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Copy a version of PLAYBOOK_ID as version 1 of NEW_ID, keeping where it came from."""
    body: dict[str, Any] = {"id": new_id}
    for key, value in (("version", version), ("name", name), ("owner_team", team), ("message", message)):
        if value is not None:
            body[key] = value
    forked = _request("POST", f"{_api_url(url)}/api/playbooks/{playbook_id}/fork", token, json=body)
    origin = forked["forked_from"]
    typer.echo(f"{forked['id']} v1 ({forked['name']}), forked from {origin['id']} v{origin['version']}")


def share(
    playbook_id: PlaybookArg,
    team: Annotated[str | None, typer.Option("--team", help="Owner team (admins may leave it out: no team)")] = None,
    visibility: Annotated[
        str, typer.Option("--visibility", help="team: only the owner team and admins see it | everyone")
    ] = "everyone",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Set who owns the playbook (its members may edit it) and who sees it."""
    body = {"owner_team": team, "visibility": visibility}
    shown = _request("PUT", f"{_api_url(url)}/api/playbooks/{playbook_id}/sharing", token, json=body)
    typer.echo(f"{playbook_id}: owner team {shown['owner_team'] or '(none)'}, visible to {shown['visibility']}")


def add_version_commands(group: typer.Typer) -> None:
    """Add versions, diff, restore, fork and share to the `playbooks` command group."""
    for command in (versions, diff, restore, fork, share):
        group.command(command.__name__)(command)
