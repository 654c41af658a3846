"""Browser fixtures: Debian's Chromium driven by Playwright (never `playwright install`: it downloads)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.api.test_access import csrf_of, login
from tests.conftest import app_client
from tests.factories import PASSWORD, make_user

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where browser tests leave screenshots for people to look at (TEST_ARTIFACTS_DIR, else ./test-artifacts)."""
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


async def log_in(page: Page, server: str, username: str, next_path: str = "/") -> None:
    await page.goto(f"{server}/login?next={next_path}")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server}{next_path}")


@pytest.fixture
async def session_as(app, engine) -> AsyncIterator[Callable[[str, str], Awaitable[tuple[httpx.AsyncClient, str]]]]:
    """session_as(role, username): a browser-like client logged in with a session cookie, and its CSRF token."""
    clients: list[httpx.AsyncClient] = []

    async def make(role: str, username: str) -> tuple[httpx.AsyncClient, str]:
        make_user(engine, role, username=username)
        client = app_client(app)
        clients.append(client)
        assert (await login(client, username)).status_code == 303
        return client, csrf_of((await client.get("/account")).text)

    yield make
    for client in clients:
        await client.aclose()
