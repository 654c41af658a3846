"""Mixed API load on one real `agent-monitor web` (uvicorn; `--workers N` processes) and one `agent-monitor worker`,
on a private Postgres and an in-memory Temporal dev server: readers (incident list, incident detail), writers (create
an incident, which starts its workflow; add a comment), SSE clients and /readyz probes at once. The clients run in a
process of their own, each reader and writer with its own keep-alive connection and a think time between requests.

Per kind it prints requests, req/s, p50/p99 of the answers, each kind's p50 against its idle p50 measured in the same
run (one request at a time before the load), every error by kind (status codes; a connection closed with no response,
reset or refused; the client's own timeout), and the web's RSS (all its processes) before, at most and after.

    make bench            # or: python -m bench.load --duration 60 --readers 200 --writers 50 --sse 50 --web-workers 1 2
Targets: no connection closed without a response or reset; an overloaded web answers 503 with Retry-After; (issue 25)
p99 <= 500 ms over every answer at >= 200 req/s on one web process (`--web-workers 1`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import Engine

from bench.incident_list import seed
from bench.local_stack import LocalStack, local_stack, stop_process
from bench.machine import machine_line
from bench.monitoring import postmaster, temporal_server
from core.audit import SYSTEM
from core.db import session_scope
from core.settings import Settings
from services.identity import create_token, create_user

PR_SET_PDEATHSIG = 1
SEED_INCIDENTS = 2000
IDLE_SAMPLES = 20
KINDS = ("list", "detail", "create", "comment", "readyz")
DROPPED = ("closed, no response", "reset", "connect refused")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else float("nan")


# ---- the client process ------------------------------------------------------------------------------------------


@dataclass
class Load:
    base: str
    token: str
    duration: float
    readers: int
    writers: int
    sse: int
    think: float  # mean seconds between a user's requests (exponential); 0: none
    probe_interval: float
    timeout: float
    max_id: int


@dataclass
class Tally:
    """Answers per kind: (ms, status) of every answer; error outcomes counted by kind."""

    answers: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in (*KINDS, "sse")})
    retry_after: Counter[str] = field(default_factory=Counter)  # 503s that said when to come back
    dropped: list[str] = field(default_factory=list)  # how each drop happened: the connection's idle time before
    sse_events: int = 0
    sse_connected: int = 0


def outcome_of(err: BaseException) -> str:
    """What the client saw, in the words of the report: the server closed the connection with no response, reset
    it, refused it, or the client gave up waiting."""
    if isinstance(err, TimeoutError):
        return "client timeout"
    if isinstance(err, asyncio.IncompleteReadError):
        return "closed, no response"
    if isinstance(err, ConnectionRefusedError):
        return "connect refused"
    if isinstance(err, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    return f"{type(err).__name__}: {err}"


def request_for(kind: str, load: Load, rng: random.Random) -> tuple[str, str, dict[str, Any] | None]:
    incident = rng.randint(1, load.max_id)
    if kind == "list":
        params = rng.choice(["", "?status=open&status=in_progress", "?sort=severity", "?q=pool", "?service=svc-3"])
        return "GET", f"/api/incidents{params}", None
    if kind == "detail":
        return "GET", f"/api/incidents/{incident}", None
    if kind == "create":
        n = rng.randint(0, 10**9)
        body = {"title": f"Load test incident {n}", "service": f"svc-{n % 40}", "severity": rng.choice(["P3", "P4"])}
        return "POST", "/api/incidents", body
    return "POST", f"/api/incidents/{incident}/comments", {"body": f"Load test comment {rng.random():.6f}"}


class UserConnection:
    """One user's keep-alive connection, HTTP/1.1 spoken on a raw socket: the clients run on the machine they load,
    and this costs them a fraction of what a full client library does (httpx took ~1.4 ms of CPU per request here, a
    quarter of a core at 160 req/s), so the machine's CPU goes to what is measured. As httpx's pool does, it keeps an
    idle connection 5 s and does not send on one the server has closed."""

    KEEPALIVE_SECONDS = 5.0

    def __init__(self, load: Load) -> None:
        self.host, port = load.base.removeprefix("http://").split(":")
        self.port = int(port)
        self.timeout = load.timeout
        self.fixed = f"Host: {self.host}:{port}\r\nAuthorization: Bearer {load.token}\r\nAccept: application/json\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_answer = float("nan")  # when this connection last carried an answer (monotonic)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str]]:
        """Send one request and read its whole answer; its status code and headers (names in lower case)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(method, path, body)
        except BaseException:
            self.close()  # in an unknown state: never reused
            raise

    async def _exchange(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, str]]:
        stale = (
            self.reader is None
            or self.reader.at_eof()
            or not self.last_answer >= time.monotonic() - self.KEEPALIVE_SECONDS
        )
        if stale:
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\n{self.fixed}"
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            name.strip().lower(): value.strip().lower() for name, _, value in (h.partition(":") for h in lines[1:])
        }
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")  # no trailers: the empty line after the last chunk
        if headers.get("connection") == "close":
            self.close()
        else:
            self.last_answer = time.monotonic()
        return status, headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.last_answer = float("nan")


async def timed(conn: UserConnection, kind: str, load: Load, rng: random.Random, tally: Tally) -> None:
    method, url, body = request_for(kind, load, rng)
    started = time.perf_counter()
    idle = time.monotonic() - conn.last_answer  # nan on a new connection
    try:
        status, headers = await conn.request(method, url, body)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
        outcome = outcome_of(err)
        tally.errors[kind][outcome] += 1
        if outcome in DROPPED:
            waited = (time.perf_counter() - started) * 1000
            tally.dropped.append(
                f"{kind}: {outcome} {waited:.0f} ms after it was sent on a connection idle {idle:.3f} s"
            )
        return
    tally.answers[kind].append(((time.perf_counter() - started) * 1000, status))
    if status >= 400:
        tally.errors[kind][f"HTTP {status}"] += 1
        if status == 503 and headers.get("retry-after"):
            tally.retry_after[kind] += 1


async def user(load: Load, kinds: tuple[str, str], seed_: int, until: float, tally: Tally) -> None:
    rng = random.Random(seed_)
    conn = UserConnection(load)
    try:
        await asyncio.sleep(rng.random())  # not all in the same millisecond
        while time.monotonic() < until:
            await timed(conn, rng.choice(kinds), load, rng, tally)
            if load.think:
                await asyncio.sleep(min(rng.expovariate(1 / load.think), until - time.monotonic()))
    finally:
        conn.close()


async def sse_client(load: Load, until: float, tally: Tally) -> None:
    """A live-event client on a raw socket: events are counted in the bytes as they come, so that thousands of them
    cost the client process next to nothing (the web's CPU is what is measured)."""
    host, port = load.base.removeprefix("http://").split(":")
    request = (
        f"GET /api/events/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {load.token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(max(0.0, until - time.monotonic())):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                if status != 200:
                    tally.errors["sse"][f"HTTP {status}"] += 1
                    return
                tally.sse_connected += 1
                while chunk := await reader.read(65536):
                    tally.sse_events += chunk.count(b"data:")
                tally.errors["sse"]["stream ended early"] += 1
            finally:
                writer.close()
    except TimeoutError:
        return  # the run is over; the stream was still open: as it should be
    except asyncio.IncompleteReadError:
        tally.errors["sse"]["closed, no response"] += 1
    except ConnectionResetError:
        tally.errors["sse"]["reset"] += 1
    except ConnectionRefusedError:
        tally.errors["sse"]["connect refused"] += 1


async def probes(load: Load, until: float, tally: Tally) -> None:
    """/readyz as a load balancer or kubelet probes it: a new connection each time, a few seconds' patience."""
    while time.monotonic() < until:
        conn = UserConnection(load)
        await probe(conn, tally)
        conn.close()
        await asyncio.sleep(max(0.0, min(load.probe_interval, until - time.monotonic())))


async def probe(conn: UserConnection, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        status, _ = await conn.request("GET", "/readyz")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
        tally.errors["readyz"][outcome_of(err)] += 1
        return
    tally.answers["readyz"].append(((time.perf_counter() - started) * 1000, status))
    if status != 200:
        tally.errors["readyz"][f"HTTP {status}"] += 1


async def idle_baseline(load: Load) -> dict[str, float]:
    """p50 (ms) per kind, one request at a time, nothing else running: the figure each loaded p50 is set against."""
    rng, tally = random.Random(1), Tally()
    conn = UserConnection(load)
    try:
        for kind in KINDS[:-1]:
            for _ in range(IDLE_SAMPLES):
                await timed(conn, kind, load, rng, tally)
        for _ in range(IDLE_SAMPLES):
            await probe(conn, tally)
    finally:
        conn.close()
    return {kind: pct([ms for ms, status in tally.answers[kind] if status < 400], 50) for kind in KINDS}


async def client_main(load: Load) -> tuple[dict[str, float], Tally, float]:
    idle = await idle_baseline(load)
    tally = Tally()
    started = time.monotonic()
    until = started + load.duration
    tasks = [user(load, ("list", "detail"), i, until, tally) for i in range(load.readers)]
    tasks += [user(load, ("create", "comment"), 10_000 + i, until, tally) for i in range(load.writers)]
    tasks += [sse_client(load, until, tally) for _ in range(load.sse)]
    tasks.append(probes(load, until, tally))
    await asyncio.gather(*tasks)
    return idle, tally, time.monotonic() - started


def client_process(pipe: Connection, load: Load) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    import uvloop

    pipe.send(uvloop.run(client_main(load)))


# ---- the measuring process ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Our children get SIGTERM even if this script is killed outright (as bench/sse.py and cli/stack.py do).
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stack_env(settings: Settings, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment `agent-monitor web` and `worker` get: this stack's Postgres, Temporal and task queue; cwd and
    DATA_DIR in tmp so no `.env` of the checkout applies."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "TASK_QUEUE": settings.task_queue,
        "DATA_DIR": str(tmp),
        "OUTBOUND_ALLOW_LOOPBACK": "true",
        "EMBEDDING_PROVIDER": "off",
        "MONITORING_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@contextmanager
def child(argv: list[str], env: dict[str, str], tmp: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session (a Ctrl-C reaches only us; we stop it) that dies with us, logging to tmp/name.log."""
    log = (tmp / f"{name}.log").open("wb")
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        yield process
    finally:
        stop_process(process, 20)
        log.close()


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready in 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def rss_mib(pid: int) -> float:
    """RSS of the web: uvicorn's process and, with --workers, its worker processes."""
    root = psutil.Process(pid)
    family = [root, *root.children(recursive=True)]
    total = 0
    for process in family:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def cpu_seconds(pid: int) -> float:
    """user + system seconds of the web's processes so far."""
    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def lower_priority(pid: int, nice: int) -> None:
    """Every thread of the process and of its children `nice` nicer than ours, as `agent-monitor up` starts the
    worker and Temporal (BACKGROUND_NICE); the threads they start from now on inherit it."""
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        for thread in process.threads():
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, thread.id, os.getpriority(os.PRIO_PROCESS, 0) + nice)


def machine_busy() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run_load(
    load: Load, web_pid: int, worker_pid: int, stack_pids: dict[str, int]
) -> tuple[dict[str, float], Tally, float, list[float], dict[str, float]]:
    """The client process runs the load; meanwhile the web's RSS is sampled each second. CPU per process group:
    web, clients, worker and `stack_pids` (Temporal, Postgres: their children included), and the machine's."""
    context = multiprocessing.get_context("spawn")
    pipe, child_end = context.Pipe()
    clients = context.Process(target=client_process, args=(child_end, load), daemon=True)
    busy_before, total_before = machine_busy()
    clients.start()
    assert clients.pid is not None
    pids = {"web": web_pid, "clients": clients.pid, "worker": worker_pid, **stack_pids}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    rss: list[float] = []
    try:
        while not pipe.poll(1):
            if not clients.is_alive():
                raise RuntimeError("the client process died")
            rss.append(rss_mib(web_pid))
        idle, tally, wall = pipe.recv()
        cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / wall * 100 for name, pid in pids.items()}
    finally:
        clients.join(10)
        if clients.is_alive():
            clients.terminate()
    busy, total = machine_busy()
    machine = (busy - busy_before) / max(1, total - total_before) * 100 * (os.cpu_count() or 1)
    cpu["machine"] = machine
    return idle, tally, wall, rss, cpu


TARGET_RATE, TARGET_P99_MS = 200.0, 500.0  # issue 25: mixed API load on one web process


def report(
    load: Load,
    title: str,
    idle: dict[str, float],
    tally: Tally,
    wall: float,
    rss: tuple[float, float, float],
    cpu: dict[str, float],
) -> int:
    """Print the table; return how many requests had their connection dropped (closed with no response or reset)."""
    print(
        f"\n{title}: {load.readers} readers (list, detail), {load.writers} writers (create, comment), "
        f"{load.sse} SSE clients, /readyz every {load.probe_interval:g} s; think time {load.think:g} s (mean); "
        f"{wall:.0f} s\nCPU (idle baseline included): {', '.join(f'{name} {v:.0f}%' for name, v in cpu.items())} of "
        f"{(os.cpu_count() or 1) * 100}% (the rest: others on the machine)"
    )
    print(f"{'kind':<8} {'answers':>7} {'req/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'idle p50':>8} {'×idle':>6}  errors")
    dropped = 0
    for kind in KINDS:
        answers = tally.answers[kind]
        ok = [ms for ms, status in answers if status < 400]
        errors = tally.errors[kind]
        dropped += sum(n for outcome, n in errors.items() if outcome in DROPPED)
        shown = ", ".join(f"{outcome} ×{n}" for outcome, n in errors.most_common()) or "none"
        if tally.retry_after[kind]:
            shown += f" ({tally.retry_after[kind]} of the 503s with Retry-After)"
        p50 = pct(ok, 50)
        print(
            f"{kind:<8} {len(answers):>7} {len(answers) / wall:>6.1f} {p50:>8.1f} {pct(ok, 99):>8.1f} "
            f"{idle[kind]:>8.1f} {p50 / idle[kind]:>6.1f}  {shown}"
        )
    sse_errors = ", ".join(f"{o} ×{n}" for o, n in tally.errors["sse"].most_common()) or "none"
    dropped += sum(n for outcome, n in tally.errors["sse"].items() if outcome in DROPPED)
    print(
        f"sse: {tally.sse_connected} of {load.sse} connected, {tally.sse_events} events received; errors: {sse_errors}"
    )
    for line in tally.dropped[:10]:
        print(f"  dropped: {line}")
    before, peak, after = rss
    print(
        f"web RSS (all its processes): {before:.0f} MiB idle, {peak:.0f} MiB at most under load, {after:.0f} MiB after"
    )
    every = [ms for kind in KINDS for ms, status in tally.answers[kind]]
    rate, p99 = len(every) / wall, pct(every, 99)
    # Steadier than req/s from one run to the next on a shared machine: what each answer cost the web process.
    print(f"web CPU per answer (this mix): {cpu['web'] / 100 * wall * 1000 / max(1, len(every)):.2f} ms")
    verdict = "met" if rate >= TARGET_RATE and p99 <= TARGET_P99_MS else "NOT met"
    print(
        f"target (issue 25) p99 <= {TARGET_P99_MS:g} ms at >= {TARGET_RATE:g} req/s, every answer of every kind: "
        f"{rate:.0f} req/s, p99 {p99:.0f} ms: {verdict}"
    )
    return dropped


def web_argv(server: str, workers: int, port: int) -> list[str]:
    """`agent-monitor web` as shipped, or (the baseline) the same app on uvicorn with uvicorn's default options."""
    if server == "ours":
        return [str(Path(sys.executable).parent / "agent-monitor"), "web", "--workers", str(workers)]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]


def sessions_opened(engine: Engine) -> int:
    """Connections Postgres has accepted so far (all databases): the difference over a run is how many the web and
    the worker opened (and closed) while it ran, beside the ones their pools kept."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        return int(conn.exec_driver_sql("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database").scalar_one())


def event_counts(engine: Engine) -> tuple[int, int]:
    """Rows written to `events` so far, and index scans of it: over a run, mostly the live hub's reads (each
    notification it does not skip costs one)."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT n_tup_ins, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'events'"
        ).one()
        return int(row[0]), int(row[1])


async def one_run(
    options: argparse.Namespace,
    local: LocalStack,
    tmp: Path,
    token: str,
    workers: int,
    server: str,
    worker_pid: int,
) -> int:
    """One web configuration under the load; returns its dropped connections."""
    port = free_port()
    env = stack_env(
        local.settings,
        tmp,
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(port),
        SSE_MAX_PER_USER=str(max(20, options.sse)),  # every bench client is one user with one token
        SSE_MAX_PER_TOKEN=str(max(5, options.sse)),
    )
    name = f"web-{server}-{workers}"
    with child(web_argv(server, workers, port), env, tmp, name) as web:
        wait_ready(web, f"http://127.0.0.1:{port}/readyz", tmp / f"{name}.log")
        load = Load(
            base=f"http://127.0.0.1:{port}",
            token=token,
            duration=options.duration,
            readers=options.readers,
            writers=options.writers,
            sse=options.sse,
            think=options.think,
            probe_interval=options.probe_interval,
            timeout=options.timeout,
            max_id=SEED_INCIDENTS,
        )
        before = rss_mib(web.pid)
        opened = await asyncio.to_thread(sessions_opened, local.engine)
        events = await asyncio.to_thread(event_counts, local.engine)
        stack_pids = {"Temporal": temporal_server().pid, "Postgres": postmaster(local.engine).pid}
        idle, tally, wall, rss, cpu = await asyncio.to_thread(run_load, load, web.pid, worker_pid, stack_pids)
        opened = await asyncio.to_thread(sessions_opened, local.engine) - opened - 2  # less this function's own two
        await asyncio.sleep(2)  # and every process's statistics flushed (at least once a second)
        written, scans = await asyncio.to_thread(event_counts, local.engine)
        written, scans = written - events[0], scans - events[1]
        after = rss_mib(web.pid)
        title = (
            "`agent-monitor web`" if server == "ours" else "baseline: uvicorn's defaults"
        ) + f", --workers {workers}"
        dropped = report(load, title, idle, tally, wall, (before, max(rss, default=before), after), cpu)
        print(f"Postgres connections opened during the run (web, worker; pools included): {opened}")
        per = f" ({scans / written:.2f} per event)" if written else ""
        print(f"events written during the run: {written}; index reads of the table (the live hub's): {scans}{per}")
    log = (tmp / f"{name}.log").read_text(errors="replace")
    tracebacks = log.count("Traceback")
    if tracebacks:
        print(f"web log: {tracebacks} tracebacks; the last:\n{log[log.rfind('Traceback') :][:2000]}")
    return dropped


async def main(options: argparse.Namespace) -> int:
    dropped = 0
    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="am-bench-load-")))
        local = await stack.enter_async_context(local_stack("bench-load"))
        seed(local.engine, SEED_INCIDENTS)
        with session_scope(local.engine) as session:
            admin = create_user(session=session, actor=SYSTEM, username="bench", role="admin", password=None)
            token, _ = create_token(session=session, actor=SYSTEM, user=admin, name="bench")
        binary = str(Path(sys.executable).parent / "agent-monitor")
        worker = stack.enter_context(child([binary, "worker"], stack_env(local.settings, tmp), tmp, "worker"))
        for background in (worker.pid, temporal_server().pid):
            lower_priority(background, options.background_nice)
        print(
            f"one `agent-monitor worker` (pid {worker.pid}), Temporal dev server in memory, embedded Postgres with "
            f"{SEED_INCIDENTS} incidents; clients in a process of their own; {os.cpu_count()} CPUs; worker and "
            f"Temporal at nice +{options.background_nice} (BACKGROUND_NICE, as `agent-monitor up` runs them)"
        )
        servers = (["stock"] if options.stock else []) + ["ours"]
        for workers in options.web_workers:
            for server in servers:
                dropped += await one_run(options, local, tmp, token, workers, server, worker.pid)
    verdict = "met" if dropped == 0 else f"NOT met ({dropped} dropped)"
    print(f"\ntarget: no connection closed without a response or reset: {verdict}")
    return 0 if dropped == 0 else 1


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of load per web configuration")
    parser.add_argument("--readers", type=int, default=200, help="users listing and opening incidents")
    parser.add_argument("--writers", type=int, default=50, help="users creating incidents and commenting")
    parser.add_argument("--sse", type=int, default=50, help="live-event (SSE) clients held open throughout")
    parser.add_argument(
        "--background-nice",
        type=int,
        choices=range(20),
        metavar="0-19",
        default=Settings.model_fields["background_nice"].default,
        help="how much nicer than the web the worker and Temporal run (as `agent-monitor up` runs them; 0: alike)",
    )
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between a user's requests; 0: none")
    parser.add_argument("--probe-interval", type=float, default=2.0, help="seconds between /readyz probes")
    parser.add_argument("--timeout", type=float, default=60.0, help="the clients' timeout per request, seconds")
    parser.add_argument(
        "--web-workers", type=int, nargs="+", default=[1], help="`agent-monitor web --workers N`, one run per N"
    )
    parser.add_argument(
        "--stock", action="store_true", help="first the same app on uvicorn's default options (the baseline)"
    )
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for `kill` as for Ctrl-C
    try:
        print(machine_line(), flush=True)
        sys.exit(asyncio.run(main(parser.parse_args())))
    except KeyboardInterrupt:
        sys.exit(130)
