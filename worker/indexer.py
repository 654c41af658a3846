"""The embedding indexer: fills in `conversation_messages.embedding` after the insert, off the agents' hot path.

Woken by NOTIFY on `agent_monitor_messages` (agents' and operators' appends send it), it embeds what has no
vector yet in batches. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so any number of indexers (one per
worker host, say) share the work without embedding a message twice; a message appended while every indexer
was down is picked up by the sweep each one runs when it (re)connects. `agent-monitor conversations reindex`
runs the same batches by hand (`--all` re-embeds messages stored with another model).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
from sqlalchemy import Engine, text

from core.conversations import MESSAGES_CHANNEL
from core.db import libpq_url
from core.embeddings import EmbeddingError, EmbeddingProvider

log = logging.getLogger(__name__)
BATCH = 64
SWEEP_SECONDS = 300  # a safety net for a NOTIFY lost with a dropped connection; NOTIFY does the real work

_CLAIM = text(
    """
SELECT id, content FROM conversation_messages
WHERE (embedding IS NULL AND (embedding_model IS NULL OR CAST(:all AS boolean)))
   OR (CAST(:all AS boolean) AND embedding_model IS DISTINCT FROM :model)
ORDER BY id LIMIT :batch
FOR UPDATE SKIP LOCKED
"""
)
_STORE = text(
    "UPDATE conversation_messages SET embedding = CAST(:vector AS vector), embedding_model = :model WHERE id = :id"
)
# A message the provider refuses on its own is marked, so it no longer holds up the others (`reindex --all`
# tries it again).
_FAILED = text("UPDATE conversation_messages SET embedding_model = :marker WHERE id = :id")
EMBED_CHARS = 8_000  # what an embedding model reads of a message at most (MiniLM itself stops at 256 tokens)


def _literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


class EmbeddingIndexer:
    def __init__(self, engine: Engine, provider: EmbeddingProvider, *, batch: int = BATCH) -> None:
        self._engine = engine
        self._provider = provider
        self._batch = batch

    def index_batch(self, *, everything: bool = False) -> int:
        """Embed one batch of messages without a vector (with `everything`: or with another model's)."""
        with self._engine.begin() as db:
            rows = db.execute(_CLAIM, {"all": everything, "model": self._provider.name, "batch": self._batch}).all()
            if not rows:
                return 0
            texts = [row.content[:EMBED_CHARS] for row in rows]
            try:
                pairs = list(zip(rows, self._provider.embed(texts), strict=True))
            except EmbeddingError as err:  # find the message(s) it refuses, one at a time
                log.warning("embedding a batch of %d failed (%s); embedding one by one", len(rows), err)
                pairs = []
                refused: list[tuple[Any, str]] = []
                for row, one in zip(rows, texts, strict=True):
                    try:
                        pairs.append((row, self._provider.embed([one])[0]))
                    except EmbeddingError as one_failed:
                        refused.append((row, str(one_failed)))
                if not pairs:  # nothing goes through: the provider is down, not these messages; retry later
                    raise
                for row, reason in refused:
                    log.error("message %s cannot be embedded: %s", row.id, reason)
                    db.execute(_FAILED, {"id": row.id, "marker": f"failed:{self._provider.name}"[:100]})
            if pairs:
                db.execute(
                    _STORE,
                    [{"id": row.id, "vector": _literal(vector), "model": self._provider.name} for row, vector in pairs],
                )
        return len(rows)

    def backfill(self, *, everything: bool = False) -> int:
        """Embed until nothing is left; how many messages were embedded. A message stored meanwhile joins in."""
        done = 0
        while count := self.index_batch(everything=everything):
            done += count
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Index on every NOTIFY until `stop` is set; reconnect (and sweep) when the database goes away."""
        url = libpq_url(self._engine.url.render_as_string(hide_password=False))
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {MESSAGES_CHANNEL}")
                    await self._drain()  # what arrived while no indexer listened
                    last_sweep = time.monotonic()
                    while not stop.is_set():
                        woke = False
                        async for _ in conn.notifies(timeout=1.0, stop_after=1):
                            woke = True
                        if woke or time.monotonic() - last_sweep > SWEEP_SECONDS:
                            await self._drain()
                            last_sweep = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("embedding indexer: %s; retrying in 2 s", err)
                await asyncio.sleep(2)

    async def _drain(self) -> None:
        count = await asyncio.to_thread(self.backfill)
        if count:
            log.info("embedded %d conversation message(s) with %s", count, self._provider.name)
