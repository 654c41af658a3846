"""`agent-monitor conversations …` (search through the web API; reindex directly in the database) and
`agent-monitor indexer` (the embedding indexer as a process of its own)."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Annotated, Any

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

conversations_app = typer.Typer(no_args_is_help=True, help="Search and index incident conversations.")


def _provider_or_exit(settings: Any) -> Any:
    from core.embeddings import EmbeddingError, embedding_provider

    try:
        provider = embedding_provider(settings)
    except EmbeddingError as err:
        raise fail(str(err), 2) from None
    if provider is None:
        raise fail("embeddings are off (EMBEDDING_PROVIDER=off): nothing to index", 2)
    return provider


@conversations_app.command("search")
def conversations_search(
    text: Annotated[str, typer.Argument(help="What to look for")],
    keyword: Annotated[bool, typer.Option("--keyword", help="Keyword (full-text) search instead of meaning")] = False,
    incident_id: Annotated[int | None, typer.Option("--incident", help="Only this incident's messages")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's messages")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 10,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Find messages by meaning (default, across every incident) or by keywords, best match first."""
    params: dict[str, Any] = {"limit": limit, ("q" if keyword else "semantic"): text}
    if incident_id is not None:
        params["incident"] = incident_id
    if agent:
        params["agent"] = agent
    page = _request("GET", f"{_api_url(url)}/api/conversations", token, params=params)
    if as_json:
        typer.echo(json.dumps(page["items"], indent=2))
        return
    if not page["items"]:
        typer.echo("no matching messages")
    for m in page["items"]:
        score = f"{m['similarity']:.3f}" if "similarity" in m else f"{m.get('rank', 0):.3f}"
        who = m["agent"] or (m["metadata"] or {}).get("author") or m["role"]
        first_line = m["content"].strip().splitlines()[0][:150] if m["content"].strip() else ""
        typer.echo(f"{score}  incident #{m['incident_id']}  {m['created_at'][:19]}  {who}: {first_line}")


@conversations_app.command("reindex")
def conversations_reindex(
    everything: Annotated[bool, typer.Option("--all", help="Also re-embed messages stored with another model")] = False,
) -> None:
    """Embed every message that has no vector yet (a backfill; safe beside running indexers)."""
    from core.db import make_engine, resolve_database_url
    from worker.indexer import EmbeddingIndexer

    settings = settings_or_exit()
    provider = _provider_or_exit(settings)
    engine = make_engine(resolve_database_url(settings, stop_at_exit=False))
    try:
        count = EmbeddingIndexer(engine, provider).backfill(everything=everything)
    finally:
        engine.dispose()
    typer.echo(f"embedded {count} message(s) with {provider.name}")


def indexer() -> None:
    """Run the embedding indexer: embeds new conversation messages as they arrive (run one or more)."""
    from core.db import make_engine, resolve_database_url
    from worker.indexer import EmbeddingIndexer

    settings = settings_or_exit()
    provider = _provider_or_exit(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        engine = make_engine(resolve_database_url(settings, stop_at_exit=False), pool_size=2)
        task = asyncio.create_task(EmbeddingIndexer(engine, provider).run(stop))
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        engine.dispose()

    run_then_leave(lambda: asyncio.run(main()))
