"""`agent-monitor agents search | show | install | update | remove | list | review` through the web API with the
caller's token (installing is for admins, as in the browser); `new` and `build` scaffold and package an agent
(cli/agent_scaffold.py); `index` publishes an index (cli/agent_index.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.agent_index import index_app
from cli.agent_scaffold import register as register_scaffold
from cli.common import JsonOption, TokenOption, UrlOption, _api_url, _request, fail

agents_app = typer.Typer(
    no_args_is_help=True, help="Find, install, update and remove agents (the marketplace); scaffold your own."
)
agents_app.add_typer(index_app, name="index")
register_scaffold(agents_app)

NameArg = Annotated[str, typer.Argument(help="Agent name")]
VersionOption = Annotated[str | None, typer.Option("--version", help="A version (default: the latest that runs here)")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]
# Installing runs pip and a probe of the package on the server: longer than an ordinary request.
INSTALL_TIMEOUT = 600.0


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _stars(rating: float | None, count: int) -> str:
    return f"{rating:.1f}★ ({count})" if rating is not None else "no ratings"


@agents_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Words to find in names, descriptions, authors, tags")] = "",
    capability: Annotated[str | None, typer.Option("--capability", help="e.g. investigation, remediation")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="python, webhook or command")] = None,
    sort: Annotated[str, typer.Option("--sort", help="name, rating, downloads or newest")] = "name",
    installed: Annotated[bool, typer.Option("--installed", help="Only agents installed here")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Read the indexes again now")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Agents the configured indexes offer."""
    params: dict[str, Any] = {"q": query, "sort": sort, "installed": installed, "refresh": refresh}
    params |= {k: v for k, v in (("capability", capability), ("kind", kind)) if v}
    found = _request("GET", f"{_api_url(url)}/api/marketplace", token, params=params)
    if as_json:
        _print(found)
        return
    for index in found["indexes"]:
        if index["error"]:
            typer.echo(f"! index {index['name']}: {index['error']}", err=True)
    for problem in found["problems"]:
        typer.echo(f"! {problem['index']}: {problem['where']}: {problem['message']}", err=True)
    if not found["agents"]:
        typer.echo("no agents found")
    for card in found["agents"]:
        state = ""
        if card["installed"]:
            state = f"  [installed {card['installed']}" + (
                f", update {card['latest']}]" if card["update_available"] else "]"
            )
        latest = card["latest"] or f"{card['newest']} (does not run here)"
        typer.echo(
            f"{card['name']:<28} {latest:<12} {card['kind']:<8} {','.join(card['capabilities']):<26} "
            f"{_stars(card['rating'], card['ratings'])}{state}"
        )
        if card["description"]:
            typer.echo(f"    {card['description'][:110]}")


@agents_app.command("show")
def show(name: NameArg, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """An agent's description, versions (changelogs, compatibility), what is installed, and reviews."""
    agent = _request("GET", f"{_api_url(url)}/api/marketplace/{name}", token)
    if as_json:
        _print(agent)
        return
    typer.echo(f"{agent['name']}: {agent.get('description', '')}")
    if agent.get("offered"):
        typer.echo(f"  by {agent['author'] or '?'} · {agent['license'] or 'no licence given'} · index {agent['index']}")
        typer.echo(f"  {agent['kind']} agent · {', '.join(agent['capabilities'])}")
    installed = agent["installed"]
    typer.echo(f"  installed: {installed['version']} ({installed['kind']})" if installed else "  not installed")
    typer.echo(f"  rating: {_stars(agent['rating'], agent['ratings'])}")
    for version in agent.get("versions", []):
        why = f"  — {version['incompatible']}" if version["incompatible"] else ""
        count = agent["installs"].get(version["version"], 0)
        typer.echo(f"  {version['version']:<10} risk {version['default_risk']:<8} installs {count}{why}")
        if version["changelog"]:
            typer.echo(f"      {version['changelog'].splitlines()[0][:100]}")
    for review in agent["reviews"]:
        hidden = " (hidden)" if review["hidden"] else ""
        typer.echo(f"  {review['rating']}★ {review['username']}{hidden}: {review['body'][:200]}")


def _report(result: dict[str, Any]) -> None:
    before = f"{result['previous_version']} → " if result.get("previous_version") else ""
    typer.echo(f"{result['name']}: {result['action']} {before}{result['version']} ({result['kind']})")
    for change in result.get("changed", []):
        typer.echo(f"  {change}")
    if result.get("secret"):
        typer.echo(f"  signing secret (shown once; give it to the agent's service): {result['secret']}")
    if result.get("workers_restart"):
        typer.echo("  workers restart one at a time to load it; running steps finish first")


@agents_app.command("install")
def install(
    agent: Annotated[str, typer.Argument(help="An agent name from the indexes, or a path to a .whl file")],
    version: VersionOption = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="A wheel file's expected sha256")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Install an agent from the indexes, or a wheel file (checked against --sha256). Admins only."""
    base = _api_url(url)
    if agent.endswith(".whl"):
        path = Path(agent)
        if not path.is_file():
            raise fail(f"no wheel file {agent}")
        params = {"filename": path.name} | ({"sha256": sha256} if sha256 else {})
        result = _request(
            "POST",
            f"{base}/api/marketplace/wheels",
            token,
            params=params,
            content=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=INSTALL_TIMEOUT,
        )
    else:
        if sha256:
            raise fail("--sha256 is for a wheel file; an index already names each package's sha256")
        body = {"version": version} if version else {}
        result = _request("POST", f"{base}/api/marketplace/{agent}/install", token, json=body, timeout=INSTALL_TIMEOUT)
    _print(result) if as_json else _report(result)


@agents_app.command("update")
def update(
    name: NameArg,
    version: VersionOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show what an update changes (changelog, params and risk), then update. Admins only."""
    base = _api_url(url)
    params = {"version": version} if version else {}
    preview = _request("GET", f"{base}/api/marketplace/{name}/update", token, params=params)
    if preview["incompatible"]:
        raise fail(f"{name} {preview['to']} cannot be installed here: it {preview['incompatible']}")
    if preview["from"] == preview["to"]:
        typer.echo(f"{name} is already at {preview['to']}")
        return
    if not as_json:
        typer.echo(f"{name}: {preview['from'] or 'not installed'} → {preview['to']}")
        for entry in preview["changelog"]:
            typer.echo(f"  {entry['version']}: {entry['changelog'] or '(no changelog)'}")
        for key, change in preview["changes"].items():
            typer.echo(f"  {key}: {json.dumps(change['before'])} → {json.dumps(change['after'])}")
    if not yes and not typer.confirm("Update?", default=False):
        raise typer.Exit(1)
    body = {"version": preview["to"]}
    result = _request("POST", f"{base}/api/marketplace/{name}/update", token, json=body, timeout=INSTALL_TIMEOUT)
    _print(result) if as_json else _report(result)


@agents_app.command("remove")
def remove(name: NameArg, yes: YesOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Uninstall an agent no playbook uses. Admins only."""
    if not yes and not typer.confirm(f"Remove {name}?", default=False):
        raise typer.Exit(1)
    _request("DELETE", f"{_api_url(url)}/api/marketplace/{name}", token)
    typer.echo(f"{name}: removed; workers restart without it")


@agents_app.command("list")
def list_agents(
    capability: Annotated[str | None, typer.Option("--capability", help="Only agents with this capability")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Every agent a playbook can use here: built-in, plugins, webhook agents and those from the marketplace."""
    base = _api_url(url)
    agents: Any = _request("GET", f"{base}/api/agents", token, params={"capability": capability} if capability else {})
    installed: Any = _request("GET", f"{base}/api/marketplace/installed", token)
    from_market = {row["name"]: row for row in installed}
    if as_json:
        _print([{**a, "marketplace": from_market.get(a["name"])} for a in agents])
        return
    for agent in agents:
        market = from_market.get(agent["name"])
        where = f"marketplace ({market['index'] or 'wheel'})" if market else agent["source"]
        typer.echo(
            f"{agent['name']:<28} {agent['version']:<10} {where:<24} {','.join(agent['capabilities']):<26} "
            f"risk {agent['default_risk']}"
        )


@agents_app.command("review")
def review(
    name: NameArg,
    rating: Annotated[int, typer.Option("--rating", min=1, max=5, help="1 to 5")],
    body: Annotated[str, typer.Option("--body", help="What you found")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Rate and review an agent (one review per user: this replaces yours)."""
    _request("PUT", f"{_api_url(url)}/api/marketplace/{name}/review", token, json={"rating": rating, "body": body})
    typer.echo(f"{name}: your review is saved ({rating}★)")
