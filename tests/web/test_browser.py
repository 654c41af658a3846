"""Pages in a real Chromium (Debian's, driven by Playwright) against a real uvicorn server."""

from __future__ import annotations

from tests.factories import PASSWORD, create_incident, make_user, wait_for_workflow

XSS = b'<script>window.__xss = 1; alert(1)</script><img src=x onerror="window.__xss = 2">'


async def test_agent_output_with_script_renders_inert(server, browser, api, engine, temporal_client, worker, service):
    url, peer = service
    peer.status = 503
    peer.body = XSS
    incident = await create_incident(api, service_url=url, title='<img src=x onerror="window.__xss=3">')
    await wait_for_workflow(temporal_client, incident["workflow_id"])
    make_user(engine, "viewer", username="watcher")

    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(f"{server}/incidents/{incident['id']}")
    assert page.url.startswith(f"{server}/login?next=")  # pages need a login
    await page.fill("input[name=username]", "watcher")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server}/incidents/{incident['id']}")

    investigate = page.locator('[data-step="investigate"] .summary')
    text = await investigate.inner_text()
    assert "<script>window.__xss = 1; alert(1)</script>" in text  # shown as text…
    assert await page.evaluate("window.__xss") is None  # …never run
    assert dialogs == []
    assert "onerror" in await page.locator("h1").inner_text()
    sources = await page.locator("script").evaluate_all("els => els.map(e => e.src)")
    assert sources and all(src.startswith(f"{server}/static/") for src in sources)  # only our own files
    assert await page.locator("img").count() == 0
    assert await page.get_by_test_id("whoami").inner_text() == "watcher (viewer)"


async def test_account_page_creates_shows_once_and_revokes_a_token(server, browser, app, engine):
    make_user(engine, "responder", username="tina")
    page = await browser.new_page()
    await page.goto(f"{server}/login?next=/account")
    await page.fill("input[name=username]", "tina")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{server}/account")

    await page.fill("input[name=name]", "grafana")
    await page.click("text=Create token")
    token = await page.get_by_test_id("new-token").inner_text()
    assert token.startswith("amt_")
    import httpx

    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {token}"}) as bot:
        assert (await bot.get("/api/me")).json()["username"] == "tina"
        await page.goto(f"{server}/account")
        assert await page.get_by_test_id("new-token").count() == 0  # shown once
        await page.click("text=Revoke")
        await page.wait_for_url(f"{server}/account")
        assert "revoked" in await page.locator("table.grid").inner_text()
        assert (await bot.get("/api/me")).status_code == 401
