"""A small real HTTP service to break on purpose (the fault suite, tests/scenarios; bench/scenarios.py).

    python -m tests.scenarios.faultservice --port 9000 --log /srv/logs/shop.log --state-dir /srv/state/shop \
        [--name shop] [--dependency http://127.0.0.1:9001/health] [--tick 1]
    python -m tests.scenarios.faultservice restart --state-dir /srv/state/shop   # stop it if it runs, start it again
    python -m tests.scenarios.faultservice fault --state-dir /srv/state/shop errors '{"rate": 0.5}'
    python -m tests.scenarios.faultservice fault --state-dir /srv/state/shop clear [NAME]

`GET /health` answers 200 "ok" when healthy (and, with a dependency, only while the dependency answers 200);
`GET /metrics` is Prometheus text (requests by code, errors, a latency histogram, and the error ratio and p99
latency of the last 30 s as gauges); the log gets a timestamped line per tick (ERROR lines during faults). The
state directory (tests/scenarios/faultstate.py) counts the starts, failed ones included, and holds the faults in
`control.json`: `POST /fault/<name>` (JSON body: the fault's params)
and `DELETE /fault[/<name>]` write it, and so can `fault` while the process is dead, so a fault holds across
kills and restarts. A fault with `"clear_on_restart": true` lasts only as long as the process that got it (bad
state that a restart clears).

| fault | params | effect |
|---|---|---|
| crash | message | a FATAL line, then exit 1 (once) |
| oom | | a memory warning, then exit 137 as an OOM kill would (once) |
| errors | message, rate (0–1) | that share of answers are 500 with an ERROR line each; an ERROR line per tick |
| slow | seconds | every answer but /metrics and /fault comes after that many seconds |
| flap | period | /health fails for `period` s, passes for `period` s, … from when it was set |
| config | error | at start-up: "config error: <error>", exit 78; a restart cannot fix it, clearing it can |
| secret | password, github_token, slack_token | an ERROR line per tick that holds the three secrets |
| slow_start | seconds | at start-up, that long before it listens (a cache warming up): a restart takes as long |

Standard library only (faultstate too): the restart command runs under remediate_command with nothing of the
worker's environment but PATH, LANG and HOME, from the repository's root (its COMMAND_ALLOWLIST entry's cwd).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from tests.scenarios.faultstate import (
    FAULTS,
    ONE_SHOT,
    ROOT,
    active_faults,
    clear_fault,
    count_start,
    restart,
    serve_argv,
    set_fault,
    write_json,
)

EXIT_CONFIG = 78  # EX_CONFIG (sysexits.h)
EXIT_OOM = 137  # 128 + SIGKILL: what a shell or supervisor reports for a process the OOM killer ended
WINDOW_SECONDS = 30.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
POOL_ERROR = "ERROR [db] query failed: connection pool exhausted (size=20, in use=20) request_id={id}"
SECRETS = {  # shaped as the real ones (GitHub personal token, Slack bot token); valid nowhere
    "password": "hunter2-Sc3nario",
    "github_token": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "slack_token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
}


def _error_line(params: dict[str, Any]) -> str:
    return str(params.get("message", POOL_ERROR)).replace("{id}", str(uuid.uuid4()))


class Log:
    """The service's log file: one line per entry, ISO 8601 UTC timestamp first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, level: str, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = message if message.startswith(f"{level} ") else f"{level} {message}"
        with self._lock, open(self.path, "a") as f:
            f.write(f"{stamp} {line}\n")


class Stats:
    """Counters since the start, and the answers of the last WINDOW_SECONDS for the ratio and p99 gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.codes: dict[tuple[str, int], int] = {}
        self.errors = 0
        self.buckets = [0] * len(BUCKETS)
        self.total_seconds = 0.0
        self.count = 0
        self.recent: deque[tuple[float, float, bool]] = deque()  # (at, seconds, error)

    def record(self, path: str, code: int, seconds: float) -> None:
        with self._lock:
            self.codes[(path, code)] = self.codes.get((path, code), 0) + 1
            self.errors += code >= 500
            index = bisect.bisect_left(BUCKETS, seconds)
            if index < len(BUCKETS):
                self.buckets[index] += 1
            self.total_seconds += seconds
            self.count += 1
            self.recent.append((time.time(), seconds, code >= 500))

    def counters(self) -> tuple[dict[tuple[str, int], int], int, list[int], float, int]:
        """A consistent copy: answers by (path, code), errors, histogram buckets, their sum and count."""
        with self._lock:
            return dict(self.codes), self.errors, list(self.buckets), self.total_seconds, self.count

    def window(self) -> tuple[int, int, float]:
        """Answers and errors in the window, and its p99 latency."""
        with self._lock:
            while self.recent and self.recent[0][0] < time.time() - WINDOW_SECONDS:
                self.recent.popleft()
            latencies = sorted(seconds for _, seconds, _ in self.recent)
            errors = sum(error for _, _, error in self.recent)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
        return len(latencies), errors, p99


class FaultService:
    def __init__(self, options: argparse.Namespace) -> None:
        self.name: str = options.name
        self.port: int = options.port
        self.state_dir: Path = options.state_dir
        self.dependency: str | None = options.dependency
        self.tick: float = options.tick
        self.log = Log(options.log)
        self.stats = Stats()
        self.start = 0
        self.started_at = time.time()

    def faults(self) -> dict[str, dict[str, Any]]:
        return active_faults(self.state_dir, self.start)

    def command(self) -> dict[str, Any]:
        """How `restart` starts it again: the same options, absolute paths, from the repository's root."""
        argv = serve_argv(self.port, self.log.path, self.state_dir, self.name, self.dependency, self.tick)
        return {"argv": argv, "cwd": str(ROOT), "name": self.name, "port": self.port, "log": str(self.log.path)}

    def boot(self) -> None:
        """Record the start; stop here with a config error if one is set, or take slow_start's time first."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.state_dir / "command.json", self.command())
        self.start = count_start(self.state_dir)
        (self.state_dir / "pid").write_text(str(os.getpid()))
        self.log.write("INFO", f"{self.name} starting (start #{self.start}, pid {os.getpid()})")
        config = self.faults().get("config")
        if config is not None:
            self.log.write("ERROR", f"config error: {config.get('error', 'invalid setting POOL_SIZE=-1')}")
            sys.stdout.flush()
            os._exit(EXIT_CONFIG)
        slow_start = self.faults().get("slow_start")
        if slow_start is not None:
            seconds = float(slow_start.get("seconds", 5))
            self.log.write("INFO", f"warming up the caches ({seconds:g} s) before listening")
            time.sleep(seconds)

    def act(self, name: str, entry: dict[str, Any]) -> None:
        """A one-shot fault: consume it, then end the process as that fault does."""
        clear_fault(self.state_dir, name)
        if name == "oom":
            self.log.write("WARNING", "memory high: rss 2001 MiB of the 2048 MiB limit (97%)")
            os._exit(EXIT_OOM)
        self.log.write("FATAL", entry.get("message", "unhandled RuntimeError in worker thread: state corrupted"))
        os._exit(1)

    def ticker(self) -> None:
        """Each tick: one-shot faults act; a normal line, or the faults' ERROR lines."""
        while True:
            time.sleep(self.tick)
            faults = self.faults()
            for name in ONE_SHOT:
                if name in faults:
                    self.act(name, faults[name])
            if "errors" in faults:
                self.log.write("ERROR", _error_line(faults["errors"]))
            if "secret" in faults:
                secrets = {**SECRETS, **faults["secret"]}
                self.log.write("ERROR", "login to the upstream failed: password={password} "
                               "github_token={github_token} slack_token={slack_token}".format(**secrets))  # fmt: skip
            if not faults.keys() & {"errors", "secret"}:
                answered, errors, _ = self.stats.window()
                self.log.write("INFO", f"{answered} requests in the last {WINDOW_SECONDS:g} s, {errors} errors")

    def health(self) -> tuple[int, str]:
        faults = self.faults()
        flap = faults.get("flap")
        if flap is not None:
            period = float(flap.get("period", 10))
            if int((time.time() - float(flap["since"])) / period) % 2 == 0:
                return 503, "flapping: in a failing phase"
        errors = faults.get("errors")
        if errors is not None and random.random() < float(errors.get("rate", 1.0)):  # noqa: S311 - not crypto
            self.log.write("ERROR", _error_line(errors))
            return 500, "internal error"
        if self.dependency:
            try:
                with urlopen(self.dependency, timeout=1) as answer:  # noqa: S310 - a URL the tests give
                    code = answer.status
            except HTTPError as err:
                code = err.code
            except (URLError, OSError) as err:
                self.log.write("ERROR", f"dependency {self.dependency} unreachable: {getattr(err, 'reason', err)}")
                return 503, "dependency unreachable"
            if code != 200:
                self.log.write("ERROR", f"dependency {self.dependency} answered HTTP {code}")
                return 503, f"dependency answered {code}"
        return 200, "ok"

    def metrics(self) -> str:
        label = f'service="{self.name}"'
        codes, error_total, buckets, total_seconds, count = self.stats.counters()
        answered, errors, p99 = self.stats.window()
        lines = ["# TYPE http_requests_total counter"]
        lines += [f'http_requests_total{{{label},path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(codes.items())]
        lines += ["# TYPE http_request_errors_total counter", f"http_request_errors_total{{{label}}} {error_total}"]
        lines.append("# TYPE http_request_duration_seconds histogram")
        cumulative = 0
        for bound, in_bucket in zip(BUCKETS, buckets, strict=True):
            cumulative += in_bucket
            lines.append(f'http_request_duration_seconds_bucket{{{label},le="{bound}"}} {cumulative}')
        lines += [
            f'http_request_duration_seconds_bucket{{{label},le="+Inf"}} {count}',
            f"http_request_duration_seconds_sum{{{label}}} {total_seconds:.6f}",
            f"http_request_duration_seconds_count{{{label}}} {count}",
            f"# HELP http_error_ratio Share of answers that were 5xx over the last {WINDOW_SECONDS:g} s.",
            "# TYPE http_error_ratio gauge",
            f"http_error_ratio{{{label}}} {errors / answered if answered else 0:.4f}",
            "# TYPE http_request_duration_p99_seconds gauge",
            f"http_request_duration_p99_seconds{{{label}}} {p99:.6f}",
            "# TYPE faultservice_starts_total counter",
            f"faultservice_starts_total{{{label}}} {self.start}",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {self.started_at:.3f}",
        ]
        return "\n".join(lines) + "\n"

    def serve(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, code: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/metrics":
                    return self.answer(200, service.metrics(), "text/plain; version=0.0.4")
                if self.path == "/fault":
                    return self.answer(200, json.dumps(service.faults()), "application/json")
                started = time.monotonic()
                slow = service.faults().get("slow")
                if slow is not None:
                    time.sleep(float(slow.get("seconds", 3)))
                code, body = service.health() if self.path == "/health" else (404, "not found")
                self.answer(code, body)
                service.stats.record(self.path, code, time.monotonic() - started)

            def do_POST(self) -> None:  # noqa: N802
                name = self.path.removeprefix("/fault/")
                if not self.path.startswith("/fault/") or name not in FAULTS:
                    return self.answer(404, f"POST /fault/<name>: one of {', '.join(FAULTS)}")
                length = int(self.headers.get("Content-Length") or 0)
                params = json.loads(self.rfile.read(length) or b"{}") if length else {}
                entry = set_fault(service.state_dir, name, params)
                self.answer(202 if name in ONE_SHOT else 200, json.dumps({name: entry}), "application/json")
                if name in ONE_SHOT:
                    service.act(name, entry)

            def do_DELETE(self) -> None:  # noqa: N802
                name = self.path.removeprefix("/fault").removeprefix("/") or None
                clear_fault(service.state_dir, name)
                self.answer(200, json.dumps(service.faults()), "application/json")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=self.ticker, daemon=True).start()
        self.log.write("INFO", f"{self.name} listening on 127.0.0.1:{self.port}")
        try:
            server.serve_forever()
        finally:
            self.log.write("INFO", f"{self.name} stopped")


def _terminate(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    if argv[:1] == ["restart"]:
        parser = argparse.ArgumentParser(prog="faultservice restart")
        parser.add_argument("--state-dir", type=Path, required=True)
        parser.add_argument("--wait", type=float, default=15.0, help="seconds to wait for it to listen")
        options = parser.parse_args(argv[1:])
        return restart(options.state_dir.resolve(), options.wait)
    if argv[:1] == ["fault"]:
        parser = argparse.ArgumentParser(prog="faultservice fault")
        parser.add_argument("--state-dir", type=Path, required=True)
        parser.add_argument("name", choices=[*FAULTS, "clear"])
        parser.add_argument("params", nargs="?", help="JSON params; with clear: the fault to clear (else all)")
        options = parser.parse_args(argv[1:])
        if options.name == "clear":
            clear_fault(options.state_dir, options.params)
        else:
            print(json.dumps(set_fault(options.state_dir, options.name, json.loads(options.params or "{}"))))
        return 0
    parser = argparse.ArgumentParser(prog="faultservice", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--name", default=None, help="the service label in metrics and log (default: the state dir)")
    parser.add_argument("--dependency", default=None, help="a URL /health requires to answer 200")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between the ticker's log lines")
    options = parser.parse_args(argv)
    options.log, options.state_dir = options.log.resolve(), options.state_dir.resolve()
    options.name = options.name or options.state_dir.name
    signal.signal(signal.SIGTERM, _terminate)
    service = FaultService(options)
    service.boot()
    service.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
