"""`agent-monitor services list|uptime`, `agent-monitor maintenance start|list|end` (through the web API) and
`agent-monitor monitor status` (the service monitors' `status` query, straight from Temporal)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import typer

from cli.common import (
    JsonOption,
    TokenOption,
    UrlOption,
    _api_url,
    _request,
    fail,
    run_then_leave,
    settings_or_exit,
)

services_app = typer.Typer(no_args_is_help=True, help="Monitored services and where their monitoring stands.")
maintenance_app = typer.Typer(no_args_is_help=True, help="Maintenance windows: no checks, no incidents.")
monitor_app = typer.Typer(no_args_is_help=True, help="The scheduled monitors (ServiceMonitorWorkflow).")


def _ago(at: str | None) -> str:
    if not at:
        return "never"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(at)).total_seconds()
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


@services_app.command("list")
def services_list(
    tag: Annotated[list[str] | None, typer.Option(help="Only services with this tag (repeatable)")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Every service: its status, streak, last check and open outage's incident."""
    rows: Any = _request("GET", f"{_api_url(url)}/api/services", token, params={"tag": tag or []})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no services (register one: POST /api/services)")
    for s in rows:
        state = s["state"]
        streak = ""
        if state.get("consecutive_failures"):
            streak = f"  {state['consecutive_failures']} failed in a row"
        incident = f"  incident #{state['incident_id']}" if state.get("incident_id") else ""
        error = f"  ({state['last_error']})" if state.get("last_error") and state["status"] != "up" else ""
        typer.echo(
            f"{s['name']:<30} {state['status']:<9} checked {_ago(state.get('last_checked_at'))}{streak}{incident}"
            f"{error}"
        )


def _percent(value: float | None) -> str:
    return "no data" if value is None else f"{value * 100:.3f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


@services_app.command("uptime")
def services_uptime(
    name: Annotated[str, typer.Argument(help="The service")],
    range_: Annotated[str, typer.Option("--range", help="1h | 24h | 7d | 30d | 90d | 1y")] = "24h",
    step: Annotated[str, typer.Option(help="auto | 1m | 5m | 15m | 1h | 6h | 1d")] = "auto",
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the CSV export (one row per step)")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A service's availability and latency over a range (from the uptime rollups), and its incidents in it."""
    params = {"range": range_, "step": step}
    if as_csv:
        _stream_csv(f"{_api_url(url)}/api/services/{name}/uptime.csv", token, params)
        return
    body = _request("GET", f"{_api_url(url)}/api/services/{name}/uptime", token, params=params)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    s = body["summary"]
    typer.echo(f"{body['service']}: {body['range']} from {body['start'][:16]}Z to {body['end'][:16]}Z (UTC), "
               f"step {body['step']} ({body['resolution']} rollups)")  # fmt: skip
    typer.echo(f"  availability {_percent(s['availability'])}  ({s['checks']} checks: {s['up']} up, "
               f"{s['degraded']} degraded, {s['down']} down, {s['maintenance']} in maintenance)")  # fmt: skip
    typer.echo(f"  latency p50 {_ms(s['p50_ms'])}, p95 {_ms(s['p95_ms'])}, max {_ms(s['max_ms'])}")
    for i in body["incidents"]:
        ended = f"resolved {i['resolved_at'][:16]}Z" if i["resolved_at"] else "still open"
        typer.echo(f"  incident #{i['id']} {i['severity']} {i['title']}: opened {i['opened_at'][:16]}Z, {ended}, "
                   f"{i['duration_seconds']:.0f}s")  # fmt: skip


def _stream_csv(address: str, token: str | None, params: dict[str, str]) -> None:
    """Print a CSV export as it arrives (a year of a service, or every service, need not fit in memory)."""
    token = token or os.environ.get("AGENT_MONITOR_TOKEN")
    if not token:
        raise fail("no API token: set AGENT_MONITOR_TOKEN or pass --token (create one: agent-monitor tokens create)")
    try:
        with httpx.stream(
            "GET", address, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as response:
            if response.status_code >= 400:
                response.read()
                try:
                    detail = response.json().get("detail", response.text[:300])
                except ValueError:
                    detail = response.text[:300]
                raise fail(str(detail))
            for chunk in response.iter_text():
                sys.stdout.write(chunk)
    except httpx.HTTPError as err:
        raise fail(f"cannot reach Agent Monitor at {address} ({err}); is `agent-monitor up` running?") from None
    sys.stdout.flush()


@maintenance_app.command("start")
def maintenance_start(
    service: Annotated[str | None, typer.Argument(help="The service; leave out with --all")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every service")] = False,
    minutes: Annotated[float, typer.Option(min=1, max=31 * 24 * 60, help="How long, from now")] = 60,
    reason: Annotated[str, typer.Option(help="Why (shown with the window)")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Silence a service (or --all) from now for --minutes."""
    if (service is None) == (not every):
        raise fail("name a service or pass --all (not both)", 2)
    now = datetime.now(UTC)
    body = {
        "service": service,
        "starts_at": now.isoformat(),
        "ends_at": (now + timedelta(minutes=minutes)).isoformat(),
        "reason": reason,
    }
    window = _request("POST", f"{_api_url(url)}/api/maintenance-windows", token, json=body)
    typer.echo(f"maintenance window {window['id']}: {service or 'every service'} until {window['ends_at'][:19]}Z")


@maintenance_app.command("list")
def maintenance_list(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Windows that have not ended."""
    rows: Any = _request("GET", f"{_api_url(url)}/api/maintenance-windows", token)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no maintenance windows")
    for w in rows:
        state = "active" if w["active"] else "planned"
        typer.echo(
            f"{w['id']:>5}  {w['service'] or '(every service)':<30} {state:<8} {w['starts_at'][:19]}Z → "
            f"{w['ends_at'][:19]}Z  {w['reason']}"
        )


@maintenance_app.command("end")
def maintenance_end(
    window_id: Annotated[int, typer.Argument(min=1)], url: UrlOption = None, token: TokenOption = None
) -> None:
    """End a window now."""
    _request("DELETE", f"{_api_url(url)}/api/maintenance-windows/{window_id}", token)
    typer.echo(f"maintenance window {window_id} ended")


@monitor_app.command("status")
def monitor_status(as_json: JsonOption = False) -> None:
    """Each shard's monitor: running or not, its totals and last tick. Exit 1 when one is not running."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    from core.payloads import MonitorStatus
    from core.temporal import connect
    from workflows.monitor import monitor_workflow_id

    settings = settings_or_exit()

    async def main() -> list[dict[str, Any]]:
        try:
            client = await connect(settings)
        except RuntimeError as err:
            raise fail(f"cannot reach Temporal at {settings.effective_temporal_address}: {err}") from None
        found = []
        for shard in range(settings.monitor_shards):
            workflow_id = monitor_workflow_id(settings.monitor_workflow_id, shard, settings.monitor_shards)
            handle = client.get_workflow_handle(workflow_id)
            try:
                description = await handle.describe()
                running = description.status == WorkflowExecutionStatus.RUNNING
                status = await handle.query("status", result_type=MonitorStatus) if running else None
            except RPCError as err:
                found.append({"workflow_id": workflow_id, "running": False, "error": err.message})
                continue
            found.append({"workflow_id": workflow_id, "running": running, "status": status})
        return found

    run_then_leave(lambda: _report(asyncio.run(main()), as_json))


def _report(monitors: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(monitors, default=lambda o: getattr(o, "__dict__", str(o)), indent=2))
    for m in monitors if not as_json else []:
        if not m["running"]:
            typer.echo(f"{m['workflow_id']}: not running ({m.get('error', 'ended')}); `agent-monitor worker` starts it")
            continue
        status = m["status"]
        totals, last = status.totals, status.last_tick
        line = f"{m['workflow_id']}: running, {totals.ticks} ticks, {totals.checked} checks ({totals.down} failed), "
        line += f"{totals.outages} outages, {totals.recovered} recoveries"
        if last is not None:
            line += f"; last tick {_ago(status.last_tick_at)}: {last.checked} checks, lag p99 {last.lag_p99_ms:g} ms"
        typer.echo(line)
    if not all(m["running"] for m in monitors):
        raise typer.Exit(1)
