"""Scheduled monitoring: CPU and schedule lag of N HTTP services checked every `--interval` seconds by the real
`agent-monitor worker` (its own process: ServiceMonitorWorkflow ticks, check_due_services, uptime_metrics and
service_states in Postgres), against a bare asyncio loop with one httpx.AsyncClient checking the same targets on
the same schedule (no Temporal, no Postgres), in the same run.

The targets (`/t/0` … `/t/N-1` on 127.0.0.1; by default each on its own port, so every check opens its own
connection as with distinct real services) answer 200 "ok" from their own process, which is not counted. After a
warm-up of about one interval (every service checked once: first checks are spread over one interval), the worker
is measured for `--minutes`:
- CPU = cpu time (user + system, children included) of the worker process tree + the Temporal dev server +
  Postgres (the postmaster and all its children) over wall time, as % of one core and of the machine;
- lag = checked_at - scheduled_at of the uptime_metrics rows checked in the window (p50, p99, max), and
  checks done against those expected (services × seconds / interval), failed checks.
The baseline runs `--baseline-minutes` (after a 5 s warm-up, before the worker starts); its CPU is compared per
check, and Temporal + Postgres are measured idle meanwhile (their fixed cost).

    python -m bench.monitoring [--minutes 3] [--services 1000] [--interval 60] [--ports N] [--baseline-minutes 1]
                               [--hanging K]   # K of the services never answer: their checks run to the timeout
Targets: CPU < 25 % of the machine (worker + Temporal + Postgres), lag p99 < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import Engine, text
from sqlmodel import Session

from bench.local_stack import local_stack, stop_process
from bench.machine import machine_line
from core.monitoring import spread
from core.services import HttpCheck, Service, ServiceBase
from core.settings import Settings

TARGET_CPU_MACHINE_PCT = 25.0
TARGET_LAG_P99_S = 2.0
TIMEOUT_SECONDS = 5.0
BASELINE_WARM_UP_SECONDS = 5.0
BASELINE_CONCURRENCY = 200  # as MONITOR_CONCURRENCY's default
PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parent.parent
CPUS = psutil.cpu_count() or 1

LAG_SQL = text("""
SELECT count(*), count(*) FILTER (WHERE status <> 'up'), count(DISTINCT service_id),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag)
FROM (SELECT service_id, status, extract(epoch FROM checked_at - scheduled_at)::float AS lag
      FROM uptime_metrics WHERE checked_at >= :start AND checked_at < :end) m
""")
FAILURES_SQL = text("""
SELECT coalesce(error_kind, status), count(*) FROM uptime_metrics
WHERE checked_at >= :start AND checked_at < :end AND status <> 'up' GROUP BY 1 ORDER BY 2 DESC
""")


# ---- the targets' process --------------------------------------------------------------------------------


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found"


class Target(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, GET only: 200 "ok" for /t/<n> with n < count, else 404."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1] if len(parts) > 1 else b""
            number = path[3:]
            found = path.startswith(b"/t/") and number.isdigit() and int(number) < self.count
            assert self.transport is not None
            self.transport.write(OK if found else NOT_FOUND)


async def serve_targets(count: int, ports: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: Target(count), "127.0.0.1", 0, backlog=1024) for _ in range(ports)]
    print(json.dumps([server.sockets[0].getsockname()[1] for server in servers]), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# ---- the baseline's process: a bare asyncio loop, one httpx.AsyncClient -------------------------------------


async def bare_monitor(urls: list[str], interval: float, timeout: float, seconds: float, out: Path) -> None:
    """Check urls[i] at spread(i + 1) and every interval after, for `seconds`; (due, started, ok) per check."""
    records: list[tuple[float, float, bool]] = []
    gate = asyncio.Semaphore(BASELINE_CONCURRENCY)
    async with httpx.AsyncClient(trust_env=False, headers={"User-Agent": "bench-baseline"}) as client:
        start = time.time()
        end = start + seconds
        print("ready", flush=True)

        async def watch(n: int, url: str) -> None:
            due = start + spread(n + 1, interval)
            while due < end:
                await asyncio.sleep(max(0.0, due - time.time()))
                async with gate:
                    started = time.time()
                    try:
                        ok = (await client.get(url, timeout=timeout)).status_code < 400
                    except httpx.HTTPError:
                        ok = False
                records.append((due, started, ok))
                due += interval

        await asyncio.gather(*(watch(n, url) for n, url in enumerate(urls)))
    out.write_text(json.dumps(records))


# ---- the measuring process --------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Our children get SIGTERM even if this script is killed outright (as bench/sse.py and cli/stack.py do).
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """A child process in its own session (a Ctrl-C reaches only us; we stop it) that dies with us."""
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


async def read_line(process: subprocess.Popen[Any], what: str, timeout: float = 60) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout)
    if not line:
        raise RuntimeError(f"{what} exited with {process.wait()} before it was ready")
    return line.decode() if isinstance(line, bytes) else line


@contextmanager
def target_process(count: int, ports: int) -> Iterator[subprocess.Popen[Any]]:
    argv = [sys.executable, "-m", "bench.monitoring", "--role", "targets", "--services", str(count)]
    process = child([*argv, "--ports", str(ports)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        yield process
    finally:
        stop_process(process)


@contextmanager
def worker_process(settings: Settings, tmp: Path) -> Iterator[subprocess.Popen[Any]]:
    """`agent-monitor worker` as in production (it starts the monitor itself: worker/monitors.py), logging to a
    file; cwd and DATA_DIR in tmp so no `.env` of the checkout applies."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TEMPORAL_NAMESPACE": settings.temporal_namespace,
        "TASK_QUEUE": settings.task_queue,
        "DATA_DIR": str(tmp),
        "OUTBOUND_ALLOW_LOOPBACK": "true",
        "EMBEDDING_PROVIDER": "off",
        "MONITORING_ENABLED": "true",
        "MONITOR_WORKFLOW_ID": settings.monitor_workflow_id,
        "MONITOR_SHARDS": "1",
        "MONITOR_WINDOW_SECONDS": str(settings.monitor_window_seconds),
        "MONITOR_CONCURRENCY": str(settings.monitor_concurrency),
        "LOG_LEVEL": "WARNING",
    }
    log = (tmp / "worker.log").open("wb")
    binary = Path(sys.executable).parent / "agent-monitor"
    process = child([str(binary), "worker"], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_process(process)
        log.close()


def worker_log(tmp: Path) -> str:
    path = tmp / "worker.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def cpu_seconds(roots: list[psutil.Process]) -> float:
    """user + system seconds of the processes and all their descendants; children_* holds the time of the children
    they reaped (Postgres backends that exited), so what ends in the window is still counted."""
    total = 0.0
    for root in roots:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in family:
            try:
                t = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, as bench/sse.py: others' load during the window is printed."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


@dataclass
class Cpu:
    """Percent of one core per group over a window, and the machine's busy % (all its CPUs)."""

    seconds: float
    groups: dict[str, float]
    machine: float

    def core(self, *names: str) -> float:
        return sum(self.groups[name] for name in names)


async def measure_cpu(groups: dict[str, list[psutil.Process]], seconds: float) -> Cpu:
    before = {name: cpu_seconds(procs) for name, procs in groups.items()}
    busy_before, total_before = machine_busy()
    started = time.monotonic()
    await asyncio.sleep(seconds)
    after = {name: cpu_seconds(procs) for name, procs in groups.items()}
    busy, total = machine_busy()
    wall = time.monotonic() - started
    return Cpu(
        seconds=wall,
        groups={name: (after[name] - before[name]) / wall * 100 for name in groups},
        machine=(busy - busy_before) / max(1, total - total_before) * 100,
    )


def temporal_server() -> psutil.Process:
    for process in psutil.Process().children(recursive=True):
        try:
            cmdline = process.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "start-dev" in cmdline and Path(cmdline[0]).name == "temporal":
            return process
    raise RuntimeError("the Temporal dev server is not a child of this process")


def postmaster(engine: Engine) -> psutil.Process:
    with engine.connect() as conn:
        data_directory = conn.execute(text("SHOW data_directory")).scalar_one()
    return psutil.Process(int((Path(data_directory) / "postmaster.pid").read_text().split("\n", 1)[0]))


def insert_services(engine: Engine, urls: list[str], interval: float) -> None:
    with Session(engine) as session:
        for n, url in enumerate(urls):
            config = ServiceBase(check=HttpCheck(url=url), interval_seconds=interval, timeout_seconds=TIMEOUT_SECONDS)
            session.add(Service(name=f"bench-{n:04d}", config=config.model_dump(mode="json"), created_by="bench"))
        session.commit()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class Checks:
    done: int
    expected: float
    failed: int
    services: int
    lag_p50: float
    lag_p99: float
    lag_max: float
    failures: str = ""  # by kind, when some failed

    def line(self) -> str:
        return (
            f"checks {self.done} done of {self.expected:.0f} expected ({self.done / max(1, self.expected):.2f}), "
            f"{self.failed} failed{self.failures}, {self.services} services | lag (actual - scheduled start): "
            f"p50 {self.lag_p50 * 1000:.1f} ms, p99 {self.lag_p99 * 1000:.1f} ms, max {self.lag_max * 1000:.1f} ms"
        )


async def baseline(
    tmp: Path, urls: list[str], interval: float, minutes: float, stack_groups: dict[str, list[psutil.Process]]
) -> tuple[Checks, Cpu]:
    """(Checks, Cpu of the bare loop, Cpu of Temporal + Postgres idle meanwhile)."""
    seconds = minutes * 60
    config, out = tmp / "baseline.json", tmp / "baseline-records.json"
    run_for = BASELINE_WARM_UP_SECONDS + seconds + 2
    config.write_text(json.dumps({"urls": urls, "interval": interval, "seconds": run_for, "out": str(out)}))
    argv = [sys.executable, "-m", "bench.monitoring", "--role", "baseline", "--child-config", str(config)]
    process = child(argv, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        await read_line(process, "the baseline")
        await asyncio.sleep(BASELINE_WARM_UP_SECONDS)
        start = time.time()
        cpu = await measure_cpu({"baseline": [psutil.Process(process.pid)], **stack_groups}, seconds)
        end = time.time()
        code = await asyncio.to_thread(process.wait, run_for + 60)
        if code != 0:
            raise RuntimeError(f"the baseline exited with {code}")
    finally:
        stop_process(process)
    records = [(due, started, ok) for due, started, ok in json.loads(out.read_text()) if start <= started < end]
    lags = [started - due for due, started, _ in records] or [0.0]
    checks = Checks(
        done=len(records),
        expected=len(urls) * (end - start) / interval,
        failed=sum(not ok for _, _, ok in records),
        services=len(urls),
        lag_p50=statistics.median(lags),
        lag_p99=pct(lags, 99),
        lag_max=max(lags),
    )
    return checks, cpu


async def warm_up(engine: Engine, worker: subprocess.Popen[Any], tmp: Path, services: int, interval: float) -> float:
    """Wait until every service has been checked once; seconds it took from the worker's start."""
    started = time.monotonic()
    deadline = started + 2 * interval + 120
    while True:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}:\n{worker_log(tmp)}")
        with engine.connect() as conn:
            checked = conn.execute(text("SELECT count(DISTINCT service_id) FROM uptime_metrics")).scalar_one()
        if checked >= services:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {checked} of {services} services checked after warm-up:\n{worker_log(tmp)}")
        await asyncio.sleep(1)


def checks_in(engine: Engine, start: datetime, end: datetime, services: int, interval: float) -> Checks:
    window = {"start": start, "end": end}
    with engine.connect() as conn:
        done, failed, distinct, p50, p99, worst = conn.execute(LAG_SQL, window).one()
        failures = conn.execute(FAILURES_SQL, window).all()
    return Checks(
        done=done,
        expected=services * (end - start).total_seconds() / interval,
        failed=failed,
        services=distinct,
        lag_p50=p50 or 0.0,
        lag_p99=p99 or 0.0,
        lag_max=worst or 0.0,
        failures=f" ({', '.join(f'{kind} {n}' for kind, n in failures)})" if failures else "",
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def main(
    services: int, interval: float, minutes: float, baseline_minutes: float, ports: int, hanging: int = 0
) -> None:
    ports = min(ports, services)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="am-bench-monitoring-")))
        targets = stack.enter_context(target_process(services, ports))
        target_ports = json.loads(await read_line(targets, "the targets' process"))
        urls = [f"http://127.0.0.1:{target_ports[n % ports]}/t/{n}" for n in range(services)]
        if hanging:
            # The last `hanging` services accept connections (the kernel does) and never answer: each check of
            # theirs runs until its timeout, as a hung service's does.
            silent = stack.enter_context(socket.socket())
            silent.bind(("127.0.0.1", 0))
            silent.listen(4096)
            urls[services - hanging :] = [f"http://127.0.0.1:{silent.getsockname()[1]}/t/{n}" for n in range(hanging)]
        async with httpx.AsyncClient(trust_env=False) as probe:  # they answer, and only what they should
            assert (await probe.get(urls[0])).text == "ok"
            assert (await probe.get(f"http://127.0.0.1:{target_ports[0]}/t/{services}")).status_code == 404
        monitor_id = f"bench-monitor-{uuid.uuid4().hex[:8]}"
        async with local_stack("bench-monitoring", monitor_workflow_id=monitor_id, embedding_provider="off") as local:
            engine, settings = local.engine, local.settings
            stack_groups = {"temporal": [temporal_server()], "postgres": [postmaster(engine)]}
            print(
                f"{services} HTTP services every {interval:g} s (timeout {TIMEOUT_SECONDS:g} s), targets on "
                f"{ports} port(s) of 127.0.0.1 in their own process (not counted); {CPUS} CPUs"
                + (f"; {hanging} of them never answer (each check runs to its timeout)" if hanging else "")
            )
            bare, bare_cpu = await baseline(tmp, urls, interval, baseline_minutes, stack_groups)
            insert_services(engine, urls, interval)
            with worker_process(settings, tmp) as worker:
                took = await warm_up(engine, worker, tmp, services, interval)
                print(
                    f"worker: `agent-monitor worker` in its own process (pid {worker.pid}), monitor window "
                    f"{settings.monitor_window_seconds:g} s, concurrency {settings.monitor_concurrency}; "
                    f"warm-up: every service checked once {took:.1f} s after the worker started"
                )
                groups = {
                    "worker": [psutil.Process(worker.pid)],
                    **stack_groups,
                    "targets": [psutil.Process(targets.pid)],
                }
                start = datetime.now(UTC)
                cpu = await measure_cpu(groups, minutes * 60)
                end = datetime.now(UTC)
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}:\n{worker_log(tmp)}")
                await asyncio.sleep(TIMEOUT_SECONDS + 2)  # the window's last results reach the table
                ours = checks_in(engine, start, end, services, interval)
            errors = [line for line in worker_log(tmp).splitlines() if "ERROR" in line or "Traceback" in line]

    print(f"measured {cpu.seconds:.0f} s:")
    ours_core = cpu.core("worker", "temporal", "postgres")
    ours_ms = ours_core / 100 * cpu.seconds / max(1, ours.done) * 1000
    print(f"  {ours.line()}")
    if errors:
        print(f"  worker log: {len(errors)} error line(s), the first: {errors[0][:300]}")
    print(
        f"  CPU, % of one core: worker {cpu.groups['worker']:.1f} + Temporal {cpu.groups['temporal']:.1f} + "
        f"Postgres {cpu.groups['postgres']:.1f} = {ours_core:.1f} % of one core = {ours_core / CPUS:.1f} % of the "
        f"machine ({CPUS} cores); {ours_ms:.2f} ms CPU per check"
    )
    print(
        f"  (not counted: targets' process {cpu.groups['targets']:.1f} % of one core; "
        f"whole machine busy {cpu.machine:.1f} %)"
    )
    idle_core = bare_cpu.core("temporal", "postgres")
    bare_core = bare_cpu.groups["baseline"]
    bare_ms = bare_core / 100 * bare_cpu.seconds / max(1, bare.done) * 1000
    print(
        f"baseline: bare asyncio loop, one httpx.AsyncClient, same targets and schedule, no Temporal/Postgres, "
        f"its own process, measured {bare_cpu.seconds:.0f} s (after {BASELINE_WARM_UP_SECONDS:g} s warm-up):"
    )
    print(f"  {bare.line()}")
    print(
        f"  CPU: {bare_core:.1f} % of one core = {bare_core / CPUS:.1f} % of the machine; {bare_ms:.2f} ms CPU per "
        f"check | meanwhile, no worker: Temporal {bare_cpu.groups['temporal']:.1f} + Postgres "
        f"{bare_cpu.groups['postgres']:.1f} = {idle_core:.1f} % of one core idle"
    )
    worker_ms = cpu.groups["worker"] / 100 * cpu.seconds / max(1, ours.done) * 1000
    ratio_ms = ours_ms / bare_ms if bare_ms else float("inf")
    ratio_pct = ours_core / bare_core if bare_core else float("inf")
    print(
        f"ratio ours/baseline: CPU per check {ratio_ms:.1f}x, CPU % {ratio_pct:.1f}x "
        f"(the worker alone: {worker_ms:.2f} ms per check, {worker_ms / bare_ms if bare_ms else float('inf'):.1f}x)"
    )
    machine = ours_core / CPUS
    print(
        f"target CPU (worker + Temporal + Postgres) < {TARGET_CPU_MACHINE_PCT:g} % of the machine ({CPUS} cores): "
        f"{machine:.1f} % {verdict(machine < TARGET_CPU_MACHINE_PCT)}"
    )
    print(f"target lag p99 < {TARGET_LAG_P99_S:g} s: {ours.lag_p99:.3f} s {verdict(ours.lag_p99 < TARGET_LAG_P99_S)}")


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_child(role: str, options: argparse.Namespace) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    if role == "targets":
        import uvloop

        uvloop.run(serve_targets(options.services, options.ports))
        return
    config = json.loads(Path(options.child_config).read_text())
    asyncio.run(
        bare_monitor(config["urls"], config["interval"], TIMEOUT_SECONDS, config["seconds"], Path(config["out"]))
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=1000, help="HTTP services (targets) checked")
    parser.add_argument("--interval", type=float, default=60, help="seconds between a service's checks (>= 1)")
    parser.add_argument("--minutes", type=float, default=3, help="measured minutes, after the warm-up")
    parser.add_argument("--baseline-minutes", type=float, default=1, help="measured minutes of the bare loop")
    parser.add_argument(
        "--ports", type=int, default=None, help="ports the targets share (default: one each: a connection per check)"
    )
    parser.add_argument(
        "--hanging", type=int, default=0, help="services of them that never answer (their checks time out)"
    )
    parser.add_argument("--role", choices=["main", "targets", "baseline"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.services < 1 or options.interval < 1 or options.minutes <= 0 or options.baseline_minutes <= 0:
        parser.error("--services >= 1, --interval >= 1, --minutes > 0 and --baseline-minutes > 0")
    if not 0 <= options.hanging < options.services:
        parser.error("--hanging must be at least 0 and less than --services")
    options.ports = options.ports or options.services
    if options.role != "main":
        run_child(options.role, options)
        sys.exit(0)
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for `kill` as for Ctrl-C
    try:
        print(machine_line(), flush=True)
        asyncio.run(
            main(
                options.services,
                options.interval,
                options.minutes,
                options.baseline_minutes,
                options.ports,
                options.hanging,
            )  # fmt: skip
        )
    except KeyboardInterrupt:
        sys.exit(130)
