"""Semantic search over conversation messages: recall@10 and latency of the HNSW index at several
`hnsw.ef_search` values against an exact sequential scan, the index build time, and the embedding throughput
of the real all-MiniLM-L6-v2 model, on a private embedded Postgres (or a fresh database on DATABASE_URL).

    make bench            # or: python -m bench.conversations --messages 100000 --queries 200 --ef 40,100,200
                          #     python -m bench.conversations --million
Target (on 1,000,000 messages): recall@10 >= 0.95 and p99 <= 10 ms; the smallest ef_search meeting both is the
one the API should use.

The vectors are synthetic but not uniform noise: unit vectors around a few thousand centroids (grouped in
topics, with skewed cluster sizes and a decaying variance spectrum, as real sentence embeddings have), so
neighbours compete inside dense clusters. Query vectors are drawn the same way, never equal to a stored one.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.machine import machine_line
from core.db import EmbeddedPostgres, libpq_url, run_migrations, sqlalchemy_url

TARGET_RECALL = 0.95
TARGET_P99_MS = 10.0
TARGET_MESSAGES = 1_000_000
K = 10
DIM = 384
CENTROIDS = 4000
TOPICS = 64
NOISE = 0.75  # expected norm of a point's offset from its (unit) centroid, before normalising
CHUNK = 20_000
MESSAGES_PER_INCIDENT = 20
EMBED_MESSAGES = 1000
INDEX = "ix_conversation_messages_embedding"

SEARCH = "SELECT id FROM conversation_messages WHERE embedding IS NOT NULL ORDER BY embedding <=> %s LIMIT 10"
EXACT = (
    "SELECT id, embedding <=> %(q)s AS distance FROM conversation_messages WHERE embedding IS NOT NULL "
    "ORDER BY embedding <=> %(q)s LIMIT 10"
)
COPY_COLUMNS = (
    "incident_id",
    "workflow_id",
    "step_id",
    "agent",
    "role",
    "kind",
    "content",
    "metadata",
    "embedding",
    "embedding_model",
    "created_at",
)
# The embedding is sent as pgvector's binary wire format (uint16 dim, uint16 0, big-endian float32s) packed by
# numpy; COPY BINARY carries no types, so a bytea dumper just passes those bytes on to vector_recv.
COPY_TYPES = ["int8", "varchar", "varchar", "varchar", "varchar", "varchar", "text", "jsonb", "bytea"]
COPY_TYPES += ["varchar", "timestamptz"]

SERVICES = [
    "checkout",
    "payments",
    "orders-api",
    "auth",
    "search",
    "inventory",
    "notifications",
    "billing",
    "gateway",
    "catalog",
    "shipping",
    "recommendations",
]
DEPENDENCIES = ["postgres", "redis", "kafka", "s3", "stripe", "dns", "ldap", "elasticsearch"]
PORTS = {"postgres": 5432, "redis": 6379, "kafka": 9092, "elasticsearch": 9200, "ldap": 636}
TABLES = ["orders", "sessions", "payments", "line_items", "audit_log", "carts"]
TEAMS = ["platform", "payments", "storefront", "data", "sre"]
# (step, agent, role, template): what the agents of an incident and its operators write.
TEMPLATES: list[tuple[str, str, str, str]] = [
    ("monitor", "prometheus", "tool", "{svc}: HTTP 5xx rate {pct}% over the last 5 min (threshold 2%), p95 {ms} ms"),
    ("monitor", "uptime", "tool", "Health check of https://{svc}.internal/healthz failed {k}/5 probes: timeout 5 s"),
    ("monitor", "prometheus", "tool", "Disk usage on {host} /var/lib/{dep} at {pct2}% (threshold 90%)"),
    ("monitor", "kubernetes", "tool", "Pod {svc}-{hash} restarted {k} times in 10 min: OOMKilled (limit 512Mi)"),
    ("monitor", "prometheus", "tool", "Consumer lag on topic {svc}.events is {lag} messages and growing"),
    ("monitor", "certs", "tool", "TLS certificate for {svc}.example.com expires in {k} days"),
    (
        "investigate",
        "investigator",
        "assistant",
        "Error rate on {svc} rose at {clock} UTC, 2 minutes after deploy {sha}. Logs show 'connection refused' to "
        "{dep}:{port}; the other services are healthy, so the deploy is the likely cause.",
    ),
    (
        "investigate",
        "investigator",
        "assistant",
        "The {dep} connection pool of {svc} is exhausted ({k}/{k} in use); slow queries on {table} hold "
        "connections for more than 30 s.",
    ),
    (
        "investigate",
        "investigator",
        "assistant",
        "Replica lag on the {dep} replica is {k} s after a long-running migration; reads from {svc} see stale data.",
    ),
    (
        "investigate",
        "investigator",
        "assistant",
        "Memory of {svc} grows about {k} MB/h since {sha}; the heap dump points to an unbounded cache.",
    ),
    ("investigate", "llm", "assistant", "Upstream {dep} answers slowly ({ms} ms p99); {svc} retries amplify it."),
    ("remediate", "remediator", "assistant", "Rolled back {svc} from {sha} to {sha2}; 3/3 pods healthy."),
    ("remediate", "remediator", "assistant", "Restarted {svc}-{hash} and raised its memory limit to 1Gi."),
    ("remediate", "remediator", "assistant", "Scaled {svc} from {k} to {k2} replicas; the queue is draining."),
    ("remediate", "remediator", "assistant", "Failed over {dep} to the standby in {zone}; {svc} reconnected."),
    ("verify", "verifier", "assistant", "Error rate on {svc} back to 0.{k}% for 10 minutes, p95 {ms} ms. Resolved."),
    ("verify", "verifier", "assistant", "Health check of {svc} passing again; no new alerts for {k} min."),
    ("operator", "", "user", "Is this the same as last week's {dep} outage on {svc}?"),
    ("operator", "", "user", "Approve the rollback of {svc}, but keep {sha} in staging for the post-mortem."),
    ("operator", "", "user", "Paging the {team} on-call: customers report failed checkouts."),
    ("operator", "", "system", "Incident escalated to P{sev}: {svc} has been degraded for {k} minutes."),
]
LOG_LINE = "{stamp} {level} {svc} [{hash}] {dep} request failed after {ms} ms: {error}"
ERRORS = ["connection reset by peer", "deadline exceeded", "too many connections", "503 Service Unavailable"]


def fill(rng: random.Random, template: str, svc: str | None = None) -> str:
    dep = rng.choice(DEPENDENCIES)
    return template.format(
        svc=svc or rng.choice(SERVICES),
        dep=dep,
        port=PORTS.get(dep, 443),
        pct=round(rng.uniform(2, 60), 1),
        pct2=rng.randint(90, 99),
        ms=rng.randint(80, 9000),
        k=rng.randint(2, 40),
        k2=rng.randint(41, 80),
        lag=rng.randint(10_000, 2_000_000),
        host=f"db-{rng.randint(1, 9)}",
        hash=f"{rng.getrandbits(24):06x}",
        sha=f"{rng.getrandbits(28):07x}",
        sha2=f"{rng.getrandbits(28):07x}",
        clock=f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        table=rng.choice(TABLES),
        team=rng.choice(TEAMS),
        zone=rng.choice(["eu-west-1a", "eu-west-1b", "us-east-1c"]),
        sev=rng.randint(1, 2),
        stamp=f"2026-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
        level=rng.choice(["ERROR", "WARN"]),
        error=rng.choice(ERRORS),
    )


def long_message(rng: random.Random) -> str:
    """A tool output with a log excerpt, as investigate agents attach: 100-300 tokens."""
    svc = rng.choice(SERVICES)
    head = fill(rng, rng.choice(TEMPLATES[6:11])[3], svc)
    lines = [fill(rng, LOG_LINE, svc) for _ in range(rng.randint(3, 12))]
    return head + "\nLog excerpt:\n" + "\n".join(lines)


def embedding_texts(n: int, seed: int = 7) -> list[str]:
    """Messages as agents and operators write them: mostly one or two sentences, a fifth with log excerpts."""
    rng = random.Random(seed)
    return [long_message(rng) if rng.random() < 0.2 else fill(rng, rng.choice(TEMPLATES)[3]) for _ in range(n)]


class Space:
    """Clustered 384-dim unit vectors: topics -> centroids -> points, anisotropic noise, skewed cluster sizes."""

    def __init__(self, seed: int = 42) -> None:
        self.rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(self.rng.standard_normal((DIM, DIM)))
        spectrum = 1 / np.sqrt(np.arange(1, DIM + 1))  # variance ~ 1/rank: a few directions dominate
        self.mixing = (spectrum / np.linalg.norm(spectrum))[:, None] * basis.T  # unit-norm noise on average
        common = self._unit(self.rng.standard_normal(DIM))  # embeddings share a mean direction
        topics = self._unit(self.rng.standard_normal((TOPICS, DIM)))
        self.centroids = self._unit(
            0.35 * common + topics[np.arange(CENTROIDS) % TOPICS] + 0.8 * self._noise(CENTROIDS)
        )
        weights = 1 / np.arange(1, CENTROIDS + 1) ** 0.8  # a few noisy services, a long tail
        self.weights = weights / weights.sum()

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def _noise(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, DIM)) @ self.mixing

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        clusters = self.rng.choice(CENTROIDS, size=n, p=self.weights)
        points = self._unit(self.centroids[clusters] + NOISE * self._noise(n))
        return points.astype(np.float32), clusters


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def log(message: str) -> None:
    print(message, flush=True)


def open_database(stack: ExitStack) -> str:
    """A libpq URL of an empty, migrated database: a private embedded Postgres, or a fresh one on DATABASE_URL."""
    base = os.environ.get("DATABASE_URL")
    if base:
        admin = libpq_url(base)
        name = f"am_bench_conversations_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

        stack.callback(drop)
        url = make_url(sqlalchemy_url(base)).set(database=name).render_as_string(hide_password=False)
        where = f"fresh database {name} on DATABASE_URL"
    else:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="am-bench-conv-")))
        postgres = EmbeddedPostgres(tmp)
        url = postgres.start()
        stack.callback(postgres.stop)
        where = f"embedded Postgres in {tmp}"
    started = time.perf_counter()
    run_migrations(url)
    log(f"{where}: migrated in {time.perf_counter() - started:.1f} s")
    return libpq_url(url)


def seed_incidents(conn: psycopg.Connection, n: int) -> tuple[int, int]:
    conn.execute(
        """
        INSERT INTO incidents (title, description, service, incident_type, severity, status, playbook_id,
            workflow_id, created_at, updated_at)
        SELECT 'Incident #' || i, 'Synthetic incident for the conversation benchmark', 'svc-' || i %% 60,
            'default', 'P' || (1 + i %% 4), 'closed', 'default', 'incident-' || i,
            now() - (%(n)s - i) * interval '10 minutes', now() - (%(n)s - i) * interval '10 minutes'
        FROM generate_series(1, %(n)s) AS i
        """,
        {"n": n},
    )
    low, high = conn.execute("SELECT min(id), max(id) FROM incidents").fetchone() or (0, 0)
    return low, high


def message_rows(space: Space, n: int, incidents: tuple[int, int], sample: list[np.ndarray]) -> Iterator[list[Any]]:
    """COPY rows: each cluster writes about one kind of message, so texts and vectors roughly agree."""
    rng = random.Random(1)
    header = np.frombuffer(struct.pack(">HH", DIM, 0), dtype=np.uint8)
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / max(n, 1)
    metadata = [{"tokens": t, "model": "bench"} for t in range(10, 90)]
    low, high = incidents
    span = high - low + 1
    done = 0
    while done < n:
        size = min(CHUNK, n - done)
        vectors, clusters = space.sample(size)
        if not sample:
            sample.append(vectors[:2000].copy())
        packed = np.empty((size, 4 + 4 * DIM), dtype=np.uint8)
        packed[:, :4] = header
        packed[:, 4:] = vectors.astype(">f4").view(np.uint8)
        for i in range(size):
            row = done + i
            stage, agent, role, template = TEMPLATES[int(clusters[i]) % len(TEMPLATES)]
            incident = low + (row * span) // n
            yield [
                incident,
                f"incident-{incident}",
                stage,
                agent or None,
                role,
                "message",
                fill(rng, template, SERVICES[int(clusters[i]) % len(SERVICES)]),
                metadata[row % len(metadata)],
                packed[i].tobytes(),
                "bench-synthetic",
                start + step * row,
            ]
        done += size


def load(conn: psycopg.Connection, space: Space, n: int, incidents: tuple[int, int]) -> tuple[float, np.ndarray]:
    sample: list[np.ndarray] = []
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in COPY_COLUMNS)
    statement = sql.SQL("COPY conversation_messages ({}) FROM STDIN (FORMAT BINARY)").format(columns)
    started = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(COPY_TYPES)
        for row_number, row in enumerate(message_rows(space, n, incidents, sample), 1):
            copy.write_row(row)
            if row_number % 100_000 == 0 and row_number < n:
                elapsed = time.perf_counter() - started
                log(f"  loaded {row_number:>9,} rows in {elapsed:6.1f} s ({row_number / elapsed:,.0f} rows/s)")
    return time.perf_counter() - started, sample[0]


def plan_of(conn: psycopg.Connection, query: str, params: Any) -> str:
    """The plan's node chain, e.g. `Limit > Index Scan using ix_…` (without the 384 numbers of the query)."""
    node = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()[0][0]["Plan"]  # type: ignore[index]
    chain = []
    while node:
        chain.append(node["Node Type"] + (f" using {node['Index Name']}" if "Index Name" in node else ""))
        node = (node.get("Plans") or [None])[0]
    return " > ".join(chain)


def exact_neighbours(conn: psycopg.Connection, queries: np.ndarray) -> tuple[list[set[int]], np.ndarray, list[float]]:
    truth: list[set[int]] = []
    distances = np.zeros((len(queries), K))
    took: list[float] = []
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        log(f"  exact plan: {plan_of(conn, EXACT, {'q': queries[0]})}")
        for i, q in enumerate(queries):
            started = time.perf_counter()
            rows = conn.execute(EXACT, {"q": q}).fetchall()
            took.append((time.perf_counter() - started) * 1000)
            truth.append({row[0] for row in rows})
            distances[i, : len(rows)] = [row[1] for row in rows]
    return truth, distances, took


def hnsw_search(conn: psycopg.Connection, queries: np.ndarray, truth: list[set[int]], ef: int) -> dict[str, float]:
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef)))
    for q in queries:  # warm: the index pages this ef visits, and the prepared statement
        conn.execute(SEARCH, (q,)).fetchall()
    latencies, recalls = [], []
    for q, exact in zip(queries, truth, strict=True):
        started = time.perf_counter()
        ids = {row[0] for row in conn.execute(SEARCH, (q,)).fetchall()}
        latencies.append((time.perf_counter() - started) * 1000)
        recalls.append(len(ids & exact) / K)
    conn.execute("RESET hnsw.ef_search")
    # As the API runs it: BEGIN; SET LOCAL hnsw.ef_search; SELECT; COMMIT (four round trips).
    set_local = sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef))
    in_transaction = []
    for q in queries:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(set_local)
            conn.execute(SEARCH, (q,)).fetchall()
        in_transaction.append((time.perf_counter() - started) * 1000)
    return {
        "recall": statistics.fmean(recalls),
        "min_recall": min(recalls),
        "missed": sum(r < 0.5 for r in recalls),
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "tx_p50": pct(in_transaction, 50),
        "tx_p99": pct(in_transaction, 99),
    }


def embedding_throughput(messages: int) -> None:
    log(f"\nembeddings: core.embeddings.MiniLMProvider on {messages:,} messages")
    try:
        from core.embeddings import MiniLMProvider
    except Exception as exc:  # being written alongside; the database figures stand on their own
        log(f"  skipped: cannot import core.embeddings.MiniLMProvider ({type(exc).__name__}: {exc})")
        return
    texts = embedding_texts(messages)
    long = ["Log excerpt" in t for t in texts]
    words = statistics.fmean(len(t.split()) for t in texts)
    log(f"  {words:.0f} words on average; {sum(long)} of them tool outputs with a log excerpt (100-300 tokens)")
    for threads in (1, 2):
        provider = MiniLMProvider(threads=threads)
        started = time.perf_counter()
        provider.embed(["warm up: load the model"])
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        vectors = provider.embed(texts)
        batched = time.perf_counter() - started
        assert len(vectors) == len(texts) and len(vectors[0]) == DIM
        single = []
        for text in texts:
            started = time.perf_counter()
            provider.embed([text])
            single.append((time.perf_counter() - started) * 1000)
        short_ms = [ms for ms, is_long in zip(single, long, strict=True) if not is_long]
        long_ms = [ms for ms, is_long in zip(single, long, strict=True) if is_long]
        log(
            f"  threads={threads}: batched (batch {provider.batch_size}) {messages / batched:5.0f} messages/s "
            f"({batched * 1000 / messages:.2f} ms/message); model load {loaded:.2f} s"
        )
        log(
            f"             single-shot: mean {statistics.fmean(single):.2f} ms, p50 {pct(single, 50):.2f}, "
            f"p99 {pct(single, 99):.2f}; short messages p50 {pct(short_ms, 50):.2f} ms, "
            f"with log excerpt p50 {pct(long_ms, 50):.2f} ms"
        )


def main(options: argparse.Namespace) -> None:
    messages = TARGET_MESSAGES if options.million else options.messages
    efs = sorted({int(ef) for ef in options.ef.split(",")})
    workers = max(0, (os.cpu_count() or 1) - 1)
    total = time.perf_counter()
    with ExitStack() as stack:
        url = open_database(stack)
        conn = stack.enter_context(psycopg.connect(url, autocommit=True))
        register_vector(conn)
        conn.add_notice_handler(lambda notice: log(f"  NOTICE: {notice.message_primary}"))

        incidents = seed_incidents(conn, max(1, messages // MESSAGES_PER_INCIDENT))
        index_sql = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (INDEX,)).fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(INDEX)))
        space = Space()
        log(f"loading {messages:,} messages ({incidents[1] - incidents[0] + 1:,} incidents) by COPY …")
        took_copy, sample = load(conn, space, messages, incidents)
        log(f"  COPY {messages:,} rows: {took_copy:.1f} s ({messages / took_copy:,.0f} rows/s)")
        first = conn.execute("SELECT embedding FROM conversation_messages ORDER BY id LIMIT 1").fetchone()
        assert first is not None and np.array_equal(first[0].to_numpy(), sample[0]), "stored vector differs"
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE conversation_messages")
        log(f"  VACUUM ANALYZE: {time.perf_counter() - started:.1f} s")

        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(options.maintenance_work_mem)))
        conn.execute(sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(workers)))
        log(f"building {INDEX} (maintenance_work_mem {options.maintenance_work_mem}, {workers} parallel workers) …")
        started = time.perf_counter()
        conn.execute(index_sql)
        took_index = time.perf_counter() - started
        conn.execute("RESET maintenance_work_mem")
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_relation_size(%s::regclass)), pg_size_pretty(pg_table_size(%s::regclass))",
            (INDEX, "conversation_messages"),
        ).fetchone()
        log(f"  HNSW build: {took_index:.1f} s; index {sizes[0]}, table {sizes[1]}")  # type: ignore[index]
        log(f"  {index_sql}")

        queries, _ = space.sample(options.queries)
        log(f"ground truth: exact top-{K} of {len(queries)} queries by sequential scan …")
        started = time.perf_counter()
        truth, distances, exact_ms = exact_neighbours(conn, queries)
        log(
            f"  {time.perf_counter() - started:.1f} s; exact scan p50 {pct(exact_ms, 50):.0f} ms, "
            f"p99 {pct(exact_ms, 99):.0f} ms per query"
        )
        random_cos = float(np.mean(queries @ sample.T))
        log(
            f"  data: cosine similarity of a query to its 1st neighbour {1 - distances[:, 0].mean():.3f}, "
            f"10th {1 - distances[:, K - 1].mean():.3f}, a random message {random_cos:.3f}"
        )
        plan = plan_of(conn, SEARCH, (queries[0],))
        log(f"  search plan: {plan}")
        if INDEX not in plan:
            log("  WARNING: the search does not use the HNSW index; the figures below are not the index's")

        results = {}
        for ef in efs:
            results[ef] = hnsw_search(conn, queries, truth, ef)
            r = results[ef]
            log(f"  ef_search {ef}: recall@10 {r['recall']:.3f}, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms")
        db_total = time.perf_counter() - total

    embedding_throughput(EMBED_MESSAGES)

    scale = "" if messages >= TARGET_MESSAGES else f" (this run: {messages:,}; indicative — run --million)"
    print(f"\n{messages:,} messages, {len(queries)} queries, k={K}, {os.cpu_count()} CPUs, warm cache, ms client-side")
    print(f"load: COPY {took_copy:.1f} s, HNSW build {took_index:.1f} s (m=16, ef_construction=64)")
    header = ("ef_search", "recall@10", "min", "<0.5", "p50 ms", "p99 ms", "tx p50", "tx p99")
    print("{:>9} {:>9} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7}  targets".format(*header))
    passing = []
    for ef, r in results.items():
        ok = r["recall"] >= TARGET_RECALL and r["p99"] <= TARGET_P99_MS
        if ok:
            passing.append(ef)
        print(
            f"{ef:>9} {r['recall']:>9.3f} {r['min_recall']:>5.1f} {r['missed']:>5} {r['p50']:>7.2f} {r['p99']:>7.2f} "
            f"{r['tx_p50']:>7.2f} {r['tx_p99']:>7.2f}  {'met' if ok else 'NOT met'}"
        )
    exact_p50, exact_p99 = pct(exact_ms, 50), pct(exact_ms, 99)
    print(f"{'exact':>9} {1:>9.3f} {1:>5.1f} {0:>5} {exact_p50:>7.1f} {exact_p99:>7.1f}   (sequential scan)")
    print("min: the worst query's recall; <0.5: queries that found fewer than half of their 10 neighbours")
    print("p50/p99: the SELECT alone (one round trip); tx: BEGIN, SET LOCAL hnsw.ef_search, SELECT, COMMIT")
    print(
        f"targets: recall@10 >= {TARGET_RECALL} and p99 <= {TARGET_P99_MS:g} ms on {TARGET_MESSAGES:,} messages{scale}"
    )
    if passing:
        print(f"ef_search meeting both: {', '.join(map(str, passing))} -> use hnsw.ef_search = {passing[0]} in the API")
    else:
        best = max(results, key=lambda ef: results[ef]["recall"])
        print(f"no ef_search meets both; best recall {results[best]['recall']:.3f} at ef_search {best}")
    print(f"database part: {db_total:.0f} s")


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help=f"{TARGET_MESSAGES:,} messages (the target scale)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", default="40,100,200", help="hnsw.ef_search values, comma-separated")
    parser.add_argument("--maintenance-work-mem", default="2GB", help="for the HNSW build")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for `kill` and `timeout` as for Ctrl-C
    try:
        print(machine_line(), flush=True)
        main(options)
    except KeyboardInterrupt:
        print("\ninterrupted; the database was stopped", file=sys.stderr)
        sys.exit(130)
