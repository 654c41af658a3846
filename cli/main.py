"""The `agent-monitor` command line."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from core.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Agent Monitor: automated incident response.")
incident_app = typer.Typer(no_args_is_help=True, help="Create and inspect incidents (through the web API).")
app.add_typer(incident_app, name="incident")
workflow_app = typer.Typer(no_args_is_help=True, help="Retry or abort an incident's workflow (through the web API).")
app.add_typer(workflow_app, name="workflow")
approvals_app = typer.Typer(no_args_is_help=True, help="List and decide approval requests (through the web API).")
app.add_typer(approvals_app, name="approvals")


def _add_identity_commands() -> None:
    from cli.users import tokens_app, users_app

    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")


_add_identity_commands()


@app.command()
def up() -> None:
    """Start everything: Postgres, Temporal dev server, migrations, worker and web, and keep them running (a child
    that exits is restarted). Ctrl-C, SIGTERM or SIGHUP stops all."""
    from cli.stack import Stack, StackError

    settings = settings_or_exit()
    stack = Stack(settings, echo=typer.echo)
    stack.handle_signals()
    code = 1
    try:
        stack.start()
        typer.echo(
            "\nAgent Monitor is up.\n"
            f"  Dashboard:   {settings.web_url}\n"
            f"  Temporal UI: {settings.effective_temporal_ui_url}\n"
            "  Ctrl-C stops everything; a part that exits is restarted.\n"
        )
        code = stack.watch()
    except StackError as err:
        typer.echo(f"error: {err}", err=True)
    except KeyboardInterrupt:
        code = 0
    finally:
        stack.stop()
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run a Temporal worker (scale out: run N of them against TEMPORAL_ADDRESS and DATABASE_URL)."""
    from core.db import make_engine, resolve_database_url
    from core.telemetry import Tracing
    from core.temporal import connect
    from worker.metrics import temporal_runtime
    from worker.runner import run_worker, tune_gc

    settings = settings_or_exit()
    tune_gc()

    async def main() -> None:
        engine = make_engine(
            resolve_database_url(settings, stop_at_exit=False), pool_size=settings.db_pool_size, pre_ping=False
        )
        tracing = Tracing.from_settings(settings, "agent-monitor-worker")
        tracing.instrument_engine(engine)
        try:
            client = await connect(settings, tracing=tracing, runtime=temporal_runtime(settings))
        except RuntimeError as err:
            raise fail(f"cannot reach Temporal at {settings.effective_temporal_address}: {err}") from None
        code = await run_worker(client, engine, settings, tracing=tracing)
        tracing.shutdown()
        engine.dispose()
        if code:  # RESTART_REQUESTED: the installed agents changed; the supervisor starts us again
            raise typer.Exit(code)

    run_then_leave(lambda: asyncio.run(main()))


# A connection the server closes while the client sends on it ends with no response (or a reset): the server must
# be the side that waits longer. Clients keep idle connections 5 s (httpx), 60 s (nginx's upstream keepalive, AWS
# ALB), up to a few minutes (browsers, which resend); uvicorn's own 5 s loses that race under load, when its event
# loop reads the new request only after the timer fired (issue 20, finding 5: python -m bench.load).
KEEP_ALIVE_SECONDS = 75
# Connections the kernel holds until the event loop accepts them (Linux caps it at net.core.somaxconn).
BACKLOG = 2048
# With --workers N, uvicorn kills a worker whose health-check thread has not answered in this long: 5 s by default,
# which a busy machine exceeds, and a killed worker drops every connection it holds.
WORKER_HEALTHCHECK_SECONDS = 30
# On SIGTERM: requests in flight get this long; live-event streams are closed (their clients reconnect).
GRACEFUL_SHUTDOWN_SECONDS = 10


def web_server_options(settings: Settings, workers: int = 1) -> dict[str, Any]:
    """uvicorn's arguments for `agent-monitor web`. The app is served behind its admission limit (app/served.py):
    past what the process can work on at once, requests wait a few seconds in line, then get 503 with Retry-After.
    X-Forwarded-For/-Proto are believed only from TRUSTED_PROXIES (none by default): uvicorn's own default believes
    127.0.0.1, which would let any local process choose the address the audit log and the login limit see."""
    proxies = settings.trusted_proxies
    return {
        "app": "app.served:create_served_app",
        "factory": True,
        "host": settings.web_host,
        "port": settings.web_port,
        "workers": workers,
        "log_level": settings.log_level.lower(),
        "proxy_headers": bool(proxies),
        # uvicorn takes IPs and CIDRs; "*" alone means any. Passed even when empty, so that uvicorn does not
        # fall back to its FORWARDED_ALLOW_IPS environment variable.
        "forwarded_allow_ips": "*" if "*" in proxies else list(proxies),
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "backlog": BACKLOG,
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        # LOG_FORMAT=json: uvicorn's own loggers keep no handlers of theirs and write through the root's JSON lines.
        **({"log_config": None} if settings.log_format == "json" else {}),
    }


@app.command()
def web(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="uvicorn worker processes (how many: docs/operations.md)")
    ] = 1,
) -> None:
    """Run the web server (dashboard + API)."""
    import uvicorn

    uvicorn.run(**web_server_options(settings_or_exit(), workers))


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the latest revision."""
    from core.db import resolve_database_url, run_migrations

    settings = settings_or_exit()
    run_migrations(resolve_database_url(settings))
    typer.echo("database schema is up to date")


def _print_incident(incident: dict[str, Any], base: str) -> None:
    typer.echo(f"#{incident['id']} [{incident['severity']}] {incident['title']}")
    typer.echo(f"  status:   {incident['status']}")
    typer.echo(
        f"  service:  {incident['service']}" + (f"  {incident['service_url']}" if incident["service_url"] else "")
    )
    typer.echo(f"  page:     {base}/incidents/{incident['id']}")
    workflow = incident.get("workflow")
    if workflow:
        typer.echo(f"  workflow: {workflow['workflow_id']}  {workflow['status']}")
        if workflow.get("error"):
            typer.echo(f"            {workflow['error']}")
        for step in workflow["steps"]:
            summary = (step.get("output") or {}).get("summary") or step.get("error") or ""
            typer.echo(f"    {step['position'] + 1}. {step['step_id']:<12} {step['status']:<10} {summary}")


@incident_app.command("create")
def incident_create(
    title: Annotated[str, typer.Option(help="What is wrong, in one line")],
    service: Annotated[str, typer.Option(help="The affected service's name")],
    severity: Annotated[str, typer.Option(help="P1 | P2 | P3 | P4")] = "P3",
    service_url: Annotated[str | None, typer.Option(help="URL the agents check, e.g. its health endpoint")] = None,
    description: Annotated[str, typer.Option(help="Longer description")] = "",
    incident_type: Annotated[str, typer.Option("--type", help="Incident type")] = "default",
    idempotency_key: Annotated[str | None, typer.Option(help="Repeat-safe key")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open an incident and start its workflow."""
    base = _api_url(url)
    payload = {
        "title": title,
        "service": service,
        "severity": severity,
        "service_url": service_url,
        "description": description,
        "incident_type": incident_type,
    }
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    incident = _request("POST", f"{base}/api/incidents", token, json=payload, headers=headers)
    if as_json:
        typer.echo(json.dumps(incident, indent=2))
    else:
        _print_incident(incident, base)


@incident_app.command("show")
def incident_show(
    incident_id: Annotated[int, typer.Argument(help="Incident number")],
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an incident with its workflow steps."""
    base = _api_url(url)
    incident = _request("GET", f"{base}/api/incidents/{incident_id}", token)
    if as_json:
        typer.echo(json.dumps(incident, indent=2))
    else:
        _print_incident(incident, base)


def _json_object(raw: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise fail(f"{option} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise fail(f"{option} must be a JSON object")
    return value


def _workflow_id(base: str, incident_id: int, token: str | None) -> str:
    incident = _request("GET", f"{base}/api/incidents/{incident_id}", token)
    if not incident.get("workflow_id"):
        raise fail(f"incident {incident_id} has no workflow")
    return str(incident["workflow_id"])


@workflow_app.command("retry")
def workflow_retry(
    incident_id: Annotated[int, typer.Argument(help="Incident number")],
    step: Annotated[str | None, typer.Option("--step", help="The failed step to run again (default: all)")] = None,
    params: Annotated[str | None, typer.Option("--params", help="New params for the step, as JSON")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Run a failed step again; completed steps do not run again."""
    body: dict[str, Any] = {"step_id": step}
    if params is not None:
        body["params"] = _json_object(params, "--params")
    base = _api_url(url)
    state = _request("POST", f"{base}/api/workflows/{_workflow_id(base, incident_id, token)}/retry", token, json=body)
    typer.echo(f"{state['workflow_id']}: {state['status']} (retrying {step or 'every failed step'})")


@workflow_app.command("abort")
def workflow_abort(
    incident_id: Annotated[int, typer.Argument(help="Incident number")],
    reason: Annotated[str, typer.Option(help="Why, for the record")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Stop the workflow: running steps are cancelled."""
    base = _api_url(url)
    workflow_id = _workflow_id(base, incident_id, token)
    state = _request("POST", f"{base}/api/workflows/{workflow_id}/abort", token, json={"reason": reason})
    typer.echo(f"{state['workflow_id']}: abort requested")


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str, typer.Option(help="pending | approved | rejected | expired | all")] = "pending",
    incident_id: Annotated[int | None, typer.Option("--incident", help="Only this incident's")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Approval requests, newest first (pending: the approver's queue)."""
    params: dict[str, Any] = {} if status == "all" else {"status": status}
    if incident_id is not None:
        params["incident_id"] = incident_id
    page = _request("GET", f"{_api_url(url)}/api/approvals", token, params=params)
    if as_json:
        typer.echo(json.dumps(page["items"], indent=2))
        return
    if not page["items"]:
        typer.echo(f"no {status} approvals")
    for a in page["items"]:
        left = f"expires in {a['seconds_left'] // 60} min" if a["status"] == "pending" else f"by {a['decided_by']}"
        typer.echo(
            f"{a['id']:>6}  {a['status']:<8}  risk {a['risk']:<8}  incident #{a['incident_id']}  "
            f"{a['step_id']}: {a['action']}  ({left})"
        )


def _decide(approval_id: int, body: dict[str, Any], url: str | None, token: str | None) -> None:
    decided = _request("POST", f"{_api_url(url)}/api/approvals/{approval_id}/decision", token, json=body)
    typer.echo(f"approval {approval_id}: {decided['status']} by {decided['decided_by']}")


@approvals_app.command("approve")
def approvals_approve(
    approval_id: Annotated[int, typer.Argument(help="Approval number (see `approvals list`)")],
    comment: Annotated[str, typer.Option(help="For the record")] = "",
    params: Annotated[str | None, typer.Option("--params", help="Approve with these params (JSON object)")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Approve; with --params, the step runs with the edited params."""
    body: dict[str, Any] = {"decision": "approve", "comment": comment}
    if params is not None:
        body["params"] = _json_object(params, "--params")
    _decide(approval_id, body, url, token)


@approvals_app.command("reject")
def approvals_reject(
    approval_id: Annotated[int, typer.Argument(help="Approval number (see `approvals list`)")],
    reason: Annotated[str, typer.Option(help="Why (shown on the incident)")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Reject: the step and the steps that depend on it are skipped."""
    _decide(approval_id, {"decision": "reject", "comment": reason}, url, token)


def _add_conversation_commands() -> None:
    from cli.conversations import conversations_app, indexer

    app.add_typer(conversations_app, name="conversations")
    app.command()(indexer)


_add_conversation_commands()


def _add_monitoring_commands() -> None:
    from cli.monitoring import maintenance_app, monitor_app, services_app

    app.add_typer(services_app, name="services")
    app.add_typer(maintenance_app, name="maintenance")
    app.add_typer(monitor_app, name="monitor")


_add_monitoring_commands()


def _add_playbook_commands() -> None:
    from cli.dry_runs import add_dry_run_command
    from cli.playbooks import playbooks_app

    add_dry_run_command(playbooks_app)  # playbooks dry-run (issue 23 part C)
    app.add_typer(playbooks_app, name="playbooks")


_add_playbook_commands()


def _add_agent_commands() -> None:
    from cli.agents import agents_app

    app.add_typer(agents_app, name="agents")


_add_agent_commands()


def _add_status_command() -> None:
    from cli.status import status

    app.command()(status)


_add_status_command()


if __name__ == "__main__":
    app()
