"""What the `agent-monitor` commands share: one-line failures, settings, and calls to the web API."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import httpx
import typer

from core.settings import Settings, SettingsError, load_settings


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def leave(code: int) -> NoReturn:
    """Exit without the interpreter's finalisation: temporalio's runtime can abort the process in it
    (PyGILState_Release from one of its threads, exit status -6) once a client or worker has run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_then_leave(body: Callable[[], None]) -> NoReturn:
    """Run a command that talked to Temporal and leave with its exit code (see `leave`)."""
    code = 0
    try:
        body()
    except typer.Exit as exc:
        code = exc.exit_code
    leave(code)


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as err:
        raise fail(str(err), 2) from None
    settings.configure_logging()
    return settings


def _api_url(url: str | None) -> str:
    return (url or os.environ.get("AGENT_MONITOR_URL") or settings_or_exit().web_url).rstrip("/")


def _request(method: str, url: str, token: str | None = None, **kwargs: Any) -> dict[str, Any]:
    token = token or os.environ.get("AGENT_MONITOR_TOKEN")
    if not token:
        raise fail("no API token: set AGENT_MONITOR_TOKEN or pass --token (create one: agent-monitor tokens create)")
    headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token}"}
    timeout = kwargs.pop("timeout", 30)
    try:
        response = httpx.request(method, url, timeout=timeout, headers=headers, **kwargs)
    except httpx.HTTPError as err:
        raise fail(f"cannot reach Agent Monitor at {url} ({err}); is `agent-monitor up` running?") from None
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {"detail": response.text[:300]}
    if response.status_code >= 400:
        raise fail(str(body.get("detail", body)))
    return body


UrlOption = Annotated[str | None, typer.Option("--url", help="Web API base URL [env AGENT_MONITOR_URL]")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer")]
TokenOption = Annotated[str | None, typer.Option("--token", help="API token [env AGENT_MONITOR_TOKEN]")]
