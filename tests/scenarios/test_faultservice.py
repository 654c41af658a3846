"""The fault service itself, as real processes: it answers, counts its starts, logs, serves metrics that promlite
scrapes, breaks as each fault says (also across a kill and a restart), and its restart command restarts it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.scenarios import faultservice, faultstate
from tests.scenarios.faultstate import ROOT
from tests.scenarios.harness import FaultProcess, eventually
from tests.scenarios.promlite import Scraper, prometheus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # real processes, real time


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[FaultProcess]:
    service = FaultProcess("shop", tmp_path)
    service.start()
    try:
        await eventually(service.healthy, "shop to answer", timeout=30)
        yield service
    finally:
        service.stop()


def restart(service: FaultProcess) -> subprocess.CompletedProcess[str]:
    """The restart command as remediate_command runs it: argv, PATH/LANG/HOME only, cwd the repository."""
    argv = [sys.executable, "-m", "tests.scenarios.faultservice", "restart", "--state-dir", str(service.state_dir)]
    return subprocess.run(argv, cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)


async def get(url: str, timeout: float = 5) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await http.get(url)


def log_lines(service: FaultProcess, level: str) -> list[str]:
    return [line for line in service.log.read_text().splitlines() if f"Z {level} " in line]


async def test_it_answers_counts_starts_and_its_restart_command_starts_it_again(shop: FaultProcess) -> None:
    assert (await get(shop.health_url)).text == "ok" and shop.starts == 1
    first = shop.kill()
    assert shop.first_exit() == -9 and not await shop.healthy()

    done = restart(shop)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["shop: was not running", f"shop: restarted, pid {shop.pid}, start #2"]
    assert shop.starts == 2 and await shop.healthy() and shop.pid != first
    # A restart of a running service stops it first (SIGTERM): one process, one more start.
    assert restart(shop).returncode == 0 and shop.starts == 3 and await shop.healthy()
    assert "shop stopped" in shop.log.read_text()


async def test_metrics_are_prometheus_text_that_promlite_answers_queries_from(shop: FaultProcess) -> None:
    for _ in range(3):
        await get(shop.health_url)
    text = (await get(f"{shop.base}/metrics")).text
    assert 'http_requests_total{service="shop",path="/health",code="200"}' in text
    assert 'http_request_duration_seconds_count{service="shop"}' in text
    scraper = Scraper({"shop": f"{shop.base}/metrics", "gone": "http://127.0.0.1:9/metrics"})
    with prometheus(scraper) as base:
        async with httpx.AsyncClient(base_url=base, timeout=5) as prom:
            ups = (await prom.get("/api/v1/query", params={"query": 'up{job=~"shop|gone"}'})).json()["data"]["result"]
            ratio = await prom.post("/api/v1/query", data={"query": 'http_error_ratio{service="shop"}'})
            refused = await prom.get("/api/v1/query", params={"query": "rate(http_requests_total[1m])"})
    assert {r["metric"]["job"]: r["value"][1] for r in ups} == {"shop": "1", "gone": "0"}
    (series,) = ratio.json()["data"]["result"]
    assert series["metric"]["job"] == "shop" and float(series["value"][1]) == 0
    assert refused.status_code == 400 and refused.json()["errorType"] == "bad_data"


async def test_errors_answer_500_and_log_error_lines_until_a_restart_clears_them(shop: FaultProcess) -> None:
    await shop.fault("errors", clear_on_restart=True)
    answer = await get(shop.health_url)
    assert answer.status_code == 500
    await eventually(lambda: len(log_lines(shop, "ERROR")) >= 2, "ERROR lines")
    assert "connection pool exhausted" in log_lines(shop, "ERROR")[0]
    metrics = (await get(f"{shop.base}/metrics")).text
    assert 'http_requests_total{service="shop",path="/health",code="500"} 1' in metrics
    assert 'http_error_ratio{service="shop"} 0.5000' in metrics  # one 200 (the fixture's), one 500
    assert restart(shop).returncode == 0 and await shop.healthy()


async def test_a_config_error_stops_every_start_until_the_control_file_is_fixed(shop: FaultProcess) -> None:
    await shop.fault("config", error="POOL_SIZE must be positive")
    assert await shop.healthy()  # read at start-up only
    shop.kill()
    done = restart(shop)
    assert done.returncode == 1 and "exited at start-up with status 78" in done.stdout
    assert log_lines(shop, "ERROR")[-1].endswith("ERROR config error: POOL_SIZE must be positive")
    assert restart(shop).returncode == 1 and shop.starts == 3 and not await shop.healthy()
    faultstate.clear_fault(shop.state_dir, "config")
    assert restart(shop).returncode == 0 and shop.starts == 4 and await shop.healthy()


async def test_a_slow_start_makes_its_restart_command_take_as_long(shop: FaultProcess) -> None:
    await shop.fault("slow_start", seconds=1.5)
    assert await shop.healthy()  # read at start-up only
    started = time.monotonic()
    done = restart(shop)
    assert done.returncode == 0 and time.monotonic() - started >= 1.5 and await shop.healthy()
    assert "warming up the caches (1.5 s) before listening" in shop.log.read_text()


async def test_oom_and_crash_end_the_process_once(shop: FaultProcess) -> None:
    await shop.fault("oom")
    assert shop.first_exit() == 137
    assert log_lines(shop, "WARNING")[-1].endswith("memory high: rss 2001 MiB of the 2048 MiB limit (97%)")
    assert restart(shop).returncode == 0 and await shop.healthy()  # consumed: the next start does not end
    await shop.fault("crash", message="unhandled KeyError: 'cart'")
    await eventually(lambda: not shop.running, "the crash")
    assert log_lines(shop, "FATAL")[-1].endswith("FATAL unhandled KeyError: 'cart'")


async def test_slow_flap_secret_and_a_broken_dependency(tmp_path: Path, shop: FaultProcess) -> None:
    await shop.fault("slow", seconds=1)
    started = time.monotonic()
    assert (await get(shop.health_url)).status_code == 200 and time.monotonic() - started >= 1
    faultstate.clear_fault(shop.state_dir, "slow")

    await shop.fault("flap", period=1)
    assert (await get(shop.health_url)).status_code == 503  # a failing phase first
    await eventually(shop.healthy, "the passing phase", timeout=10)
    faultstate.clear_fault(shop.state_dir, "flap")

    await shop.fault("secret")
    await eventually(lambda: log_lines(shop, "ERROR"), "the secret line")
    line = log_lines(shop, "ERROR")[0]
    assert all(secret in line for secret in faultservice.SECRETS.values())

    front = FaultProcess("front", tmp_path, dependency=shop.health_url)
    front.start()
    try:
        await eventually(front.healthy, "front to answer", timeout=30)
        shop.kill()
        assert (await get(front.health_url)).status_code == 503
        assert f"dependency {shop.health_url} unreachable" in log_lines(front, "ERROR")[-1]
    finally:
        front.stop()
