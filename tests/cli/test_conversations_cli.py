"""The embedding indexer woken by NOTIFY (two at once share the work), `agent-monitor conversations reindex` and
`agent-monitor conversations search` as a user runs them, on real Postgres, Temporal and the real model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

import pytest
from sqlmodel import Session, col, select

from core.conversations import ConversationMessage
from core.embeddings import EmbeddingError, MiniLMProvider
from tests.api.incident_rows import insert_incident
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, step, wait_until
from worker.indexer import EmbeddingIndexer

CLI = [sys.executable, "-m", "cli.main"]


class CountingProvider:
    """The real model, counting what it was asked to embed."""

    def __init__(self, model: MiniLMProvider) -> None:
        self._model = model
        self.name = model.name
        self.embedded: Counter[str] = Counter()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.embedded.update(texts)
        return self._model.embed(texts)


def unembedded(engine) -> list[ConversationMessage]:
    with Session(engine) as session:
        return list(session.exec(select(ConversationMessage).where(col(ConversationMessage.embedding_model).is_(None))))


async def test_running_indexers_embed_each_new_message_once(api, engine, temporal_client, worker):
    model = MiniLMProvider()
    providers = [CountingProvider(model), CountingProvider(model)]
    stop = asyncio.Event()
    indexers = [asyncio.create_task(EmbeddingIndexer(engine, p, batch=8).run(stop)) for p in providers]
    try:
        incident = await run_playbook(
            api, [step(f"s{n}", "noop", params={"summary": f"step {n} found {n * 7} errors"}) for n in range(6)]
        )
        outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
        assert outcome == "completed"
        posted = await api.post(f"/api/incidents/{incident['id']}/messages", json={"content": "checked the pool"})
        assert posted.status_code == 201
        await wait_until(lambda: not unembedded(engine), what="every message to be embedded", timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*indexers, return_exceptions=True)
    texts = [f"step {n} found {n * 7} errors" for n in range(6)] + ["checked the pool"]
    together = providers[0].embedded + providers[1].embedded
    assert together == Counter(texts)  # each exactly once, whichever indexer took it
    found = await api.get("/api/conversations", params={"semantic": "the connection pool", "limit": 1})
    assert found.json()["items"][0]["content"] == "checked the pool"


async def test_reindex_and_search_from_the_command_line(server, api, engine, database_url):
    incident_id = insert_incident(engine, title="db down", service="db")
    with Session(engine) as session:
        for content in ("database connection pool exhausted", "the newsletter went out", "disk is 40% full"):
            session.add(
                ConversationMessage(
                    incident_id=incident_id, role="assistant", agent="investigate", content=content, meta={}
                )
            )
        session.commit()
    token = (await api.post("/api/me/tokens", json={"name": "cli"})).json()["token"]
    env = {**os.environ, "DATABASE_URL": database_url, "AGENT_MONITOR_URL": server, "AGENT_MONITOR_TOKEN": token}

    async def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*CLI, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    done = await cli("conversations", "reindex")
    assert done.returncode == 0, done.stderr
    assert "embedded 3 message(s) with all-MiniLM-L6-v2" in done.stdout
    again = await cli("conversations", "reindex")
    assert "embedded 0 message(s)" in again.stdout  # nothing left to do
    everything = await cli("conversations", "reindex", "--all")
    assert "embedded 0 message(s)" in everything.stdout  # all are this model's already

    found = await cli("conversations", "search", "postgres ran out of connections", "--limit", "2")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.strip().splitlines()
    assert len(lines) == 2 and "database connection pool exhausted" in lines[0]
    assert f"incident #{incident_id}" in lines[0]
    keyword = await cli("conversations", "search", "--keyword", "newsletter")
    assert keyword.stdout.count("\n") == 1 and "the newsletter went out" in keyword.stdout
    none = await cli("conversations", "search", "--keyword", "zebra")
    assert none.stdout.strip() == "no matching messages"

    off = await cli("conversations", "reindex", EMBEDDING_PROVIDER="off")
    assert (
        off.returncode == 2
        and off.stderr.strip() == "error: embeddings are off (EMBEDDING_PROVIDER=off): nothing to index"
    )
    bad = await cli("conversations", "search", "x", "--keyword", AGENT_MONITOR_TOKEN="amt_wrong")
    assert bad.returncode == 1 and bad.stderr.startswith("error:")


class RefusingProvider(CountingProvider):
    """The real model behind a server that refuses one message (as one over an embedding server's token limit
    is), or every message (the server is down)."""

    def __init__(self, model: MiniLMProvider, *, refuse: str = "POISON", down: bool = False) -> None:
        super().__init__(model)
        self.refuse, self.down = refuse, down

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.down or any(self.refuse in t for t in texts):
            raise EmbeddingError("the embedding server refused the request")
        return super().embed(texts)


def test_a_message_the_provider_refuses_does_not_hold_up_the_others(engine):
    incident_id = insert_incident(engine)
    with Session(engine) as session:
        for content in ("first fine message", "POISON " * 50, "second fine message"):
            session.add(ConversationMessage(incident_id=incident_id, role="tool", content=content, meta={}))
        session.commit()
    model = MiniLMProvider()
    down = EmbeddingIndexer(engine, RefusingProvider(model, down=True))
    with pytest.raises(EmbeddingError):
        down.backfill()  # an outage marks nothing
    assert len(unembedded(engine)) == 3

    assert EmbeddingIndexer(engine, RefusingProvider(model)).backfill() == 3
    with Session(engine) as session:
        rows = {m.content[:6]: m for m in session.exec(select(ConversationMessage))}
    assert rows["first "].embedding_model == rows["second"].embedding_model == "all-MiniLM-L6-v2"
    assert rows["POISON"].embedding_model == "failed:all-MiniLM-L6-v2" and rows["POISON"].embedding is None
    assert EmbeddingIndexer(engine, RefusingProvider(model)).backfill() == 0  # not picked up again …
    assert EmbeddingIndexer(engine, model).backfill(everything=True) == 1  # … until a reindex --all
