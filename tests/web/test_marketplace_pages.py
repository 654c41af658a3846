"""The agent marketplace pages (issue 24) in a real Chromium, against an index and wheels built in the test and
served over HTTP on 127.0.0.1 (tests/api/market.py): browse and filter with a bad entry and an unreachable index
reported, a readme's script shown as text, an admin installing, updating (after the preview) and removing from the
page, a webhook agent's secret shown once, reviews written, edited, hidden and shown again; viewers get no buttons
and forged posts are refused; desktop and 375 px screenshots in the artifacts directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect
from sqlmodel import Session, col, select

from core.audit import AuditEvent
from core.catalogue import IndexSource
from core.marketplace import AgentReview, InstalledAgent
from tests.api.market import Market, sample_market, served
from tests.factories import make_user
from tests.peers import free_port
from tests.web.conftest import log_in
from tests.web.test_service_pages import no_sideways_scroll, watch_console

README = """# Disk probe

Reports how full a disk is, **per mount**.

<script>alert("readme")</script>

```
disk_probe path=/var/lib/postgresql/data/base/pgsql_tmp/a-very-long-path-that-must-scroll-inside-its-block
```
"""
# pip and the probe run in their own processes: a busy machine may take longer than an expectation's 5 s.
INSTALL_MS = 60_000
LONG_WORD = "/var/lib/postgresql/data/base/pgsql_tmp/averyveryverylongpathwithoutanybreakopportunityatall"


@pytest.fixture
def market(tmp_path: Path, settings) -> Market:
    settings.plugin_dir = tmp_path / "plugins"
    return sample_market(
        tmp_path / "market",
        changelog_1_1="Reads **inodes** too",
        description=f"Reports how full a disk is, e.g. {LONG_WORD}",
        readme=README,
        homepage="javascript:alert(1)",
    )


@pytest.fixture
def index(market: Market, settings):
    """The market over HTTP, and a second index nobody answers (left out, said on the page)."""
    with served(market) as url:
        nobody = f"http://127.0.0.1:{free_port()}/index.json"
        settings.agent_indexes = [IndexSource(name="acme", source=url), IndexSource(name="mirror", source=nobody)]
        yield url


def cards(page: Page):
    return page.get_by_test_id("agent-cards").locator("li.mk-card h2 a")


async def test_browse_filter_detail_and_templates_for_a_viewer(server, browser, engine, index, artifacts_dir):
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    problems = watch_console(page)
    await log_in(page, server, "vera", "/marketplace")
    await expect(cards(page)).to_have_text(["disk_probe", "pager_bridge", "shady_agent"])
    # The bad entry and the unreachable index are said; the good agents are listed all the same.
    notice = page.get_by_test_id("index-problems")
    await expect(notice).to_contain_text("Index mirror was left out")
    await expect(notice).to_contain_text("acme: agents[3] (Not A Name!)")
    probe = page.locator('li[data-agent="disk_probe"]')
    await expect(probe.get_by_test_id("card-version")).to_contain_text("1.1.0 (9.0.0 needs a newer Agent Monitor)")
    await expect(probe.get_by_test_id("card-counts")).to_have_text("40 downloads · 0 installs here")
    await expect(probe.get_by_test_id("rating")).to_contain_text("no ratings yet")
    await page.screenshot(path=str(artifacts_dir / "marketplace-desktop.png"), full_page=True)

    await page.select_option("select[name=capability]", "notification")
    await page.click("button:has-text('Search')")
    await expect(cards(page)).to_have_text(["pager_bridge"])
    assert "capability=notification" in page.url
    await page.goto(f"{server}/marketplace?kind=python&sort=downloads")
    await expect(cards(page)).to_have_text(["shady_agent", "disk_probe"])
    await page.fill("input[name=q]", "disk")
    await page.click("button:has-text('Search')")
    await expect(cards(page)).to_have_text(["disk_probe"])
    await page.goto(f"{server}/marketplace?q=nothing-like-it")
    await expect(page.get_by_test_id("no-match")).to_be_visible()

    await page.goto(f"{server}/marketplace?q=disk")
    await cards(page).first.click()
    await page.wait_for_url(f"{server}/marketplace/disk_probe")
    readme = page.get_by_test_id("readme")
    await expect(readme.locator("h1")).to_have_text("Disk probe")
    await expect(readme.locator("strong")).to_have_text("per mount")
    await expect(readme).to_contain_text('<script>alert("readme")</script>')  # shown as text, never run
    assert await readme.locator("script").count() == 0
    assert await page.locator('a[href^="javascript:"]').count() == 0  # the index's homepage is not made a link
    await expect(page.get_by_test_id("latest-version")).to_have_text("1.1.0")
    await expect(page.get_by_test_id("default-risk")).to_have_text("medium")
    await expect(page.get_by_test_id("params-schema")).to_contain_text('"path": {')
    versions = page.get_by_test_id("versions")
    await expect(versions.locator("li[data-version='9.0.0']")).to_contain_text("needs Agent Monitor >=99")
    await expect(versions.locator("li[data-version='1.1.0'] strong").last).to_have_text("inodes")
    await expect(page.get_by_test_id("admin-actions")).to_have_count(0)  # a viewer gets no install button
    await expect(page.get_by_test_id("review-form")).to_be_visible()
    await page.screenshot(path=str(artifacts_dir / "marketplace-detail-desktop.png"), full_page=True)

    await page.get_by_role("link", name="Marketplace").first.click()  # the navigation's entry
    await page.get_by_test_id("templates-link").click()
    await expect(page.get_by_test_id("command-python")).to_have_text(
        "agent-monitor agents new http_probe --capability investigation"
    )
    await expect(page.get_by_test_id("command-webhook")).to_contain_text("--webhook")
    await expect(page.get_by_test_id("template-python")).to_contain_text("http_probe_agent/agent.py")
    await expect(page.get_by_test_id("template-webhook")).to_contain_text("agent.json")
    await page.screenshot(path=str(artifacts_dir / "marketplace-templates-desktop.png"), full_page=True)
    assert problems == []

    phone = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    small = await phone.new_page()
    small_problems = watch_console(small)
    await log_in(small, server, "vera", "/marketplace")
    await expect(cards(small)).to_have_count(3)
    await no_sideways_scroll(small)
    await small.screenshot(path=str(artifacts_dir / "marketplace-375.png"), full_page=True)
    for path, shot in (
        ("/marketplace/disk_probe", "marketplace-detail-375.png"),
        ("/marketplace/_templates", "marketplace-templates-375.png"),
    ):
        await small.goto(f"{server}{path}")
        await no_sideways_scroll(small)
        await small.screenshot(path=str(artifacts_dir / shot), full_page=True)
    assert small_problems == []
    await phone.close()


async def test_an_admin_installs_updates_and_removes_from_the_page(server, browser, engine, index, artifacts_dir):
    make_user(engine, "admin", username="root")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, server, "root", "/marketplace/disk_probe")
    await page.select_option("[data-testid=install-form] select[name=version]", "1.0.0")
    await page.get_by_test_id("install").click()
    result = page.get_by_test_id("action-result")
    await expect(result).to_contain_text("Installed disk_probe 1.0.0.", timeout=INSTALL_MS)
    await expect(result).to_contain_text("Workers restart one at a time to load it")
    await expect(page.get_by_test_id("badge-installed")).to_have_text("installed 1.0.0")
    await expect(page.get_by_test_id("installs-1.0.0")).to_have_text("1 install here")

    await page.goto(f"{server}/marketplace")
    probe = page.locator('li[data-agent="disk_probe"]')
    await expect(probe.get_by_test_id("badge-installed")).to_have_text("installed 1.0.0")
    await expect(probe.get_by_test_id("badge-update")).to_have_text("update available 1.1.0")

    # The update shows what changes first: the changelog in between and the default risk low → medium.
    await probe.get_by_role("link", name="disk_probe").click()
    await page.get_by_test_id("update-link").click()
    await page.wait_for_url(f"{server}/marketplace/disk_probe/update")
    await expect(page.get_by_test_id("update-versions")).to_have_text("1.0.0 → 1.1.0")
    await expect(page.get_by_test_id("update-changelog")).to_contain_text("Reads inodes too")
    await expect(page.get_by_test_id("update-changelog")).not_to_contain_text("First release")
    await expect(page.get_by_test_id("risk-change")).to_contain_text("Default risk: low → medium")
    await page.screenshot(path=str(artifacts_dir / "marketplace-update-preview.png"), full_page=True)
    with Session(engine) as session:
        assert session.get(InstalledAgent, "disk_probe").version == "1.0.0"  # nothing changed yet
    await page.get_by_test_id("confirm-update").click()
    await expect(result).to_contain_text("Updated disk_probe 1.0.0 → 1.1.0.", timeout=INSTALL_MS)
    await expect(result).to_contain_text("Changed: default_risk changed")
    await expect(page.get_by_test_id("badge-installed")).to_have_text("installed 1.1.0")
    await expect(page.get_by_test_id("installs-1.1.0")).to_have_text("1 install here")
    await expect(page.get_by_test_id("update-link")).to_have_count(0)

    # A refused install is the service's reason on the page (422), never a 500; nothing is installed.
    await page.goto(f"{server}/marketplace/shady_agent")
    async with page.expect_response(lambda r: r.url.endswith("/marketplace/shady_agent/install")) as answer:
        await page.get_by_test_id("install").click()
    assert (await answer.value).status == 422
    await expect(page.get_by_test_id("action-error")).to_contain_text("sha256")
    await expect(page.get_by_test_id("install")).to_be_visible()

    # A webhook agent: its signing secret is shown once, on the answer to the install only.
    await page.goto(f"{server}/marketplace/pager_bridge")
    await page.get_by_test_id("install").click()
    await expect(result).to_contain_text("Installed pager_bridge 2.0.0.", timeout=INSTALL_MS)
    await expect(result).to_contain_text("need no restart")
    secret = await page.get_by_test_id("webhook-secret").text_content()
    assert secret and secret.startswith("whsec_")
    await page.screenshot(path=str(artifacts_dir / "marketplace-webhook-installed.png"), full_page=True)
    await page.goto(f"{server}/marketplace/pager_bridge")
    await expect(page.get_by_test_id("badge-installed")).to_have_text("installed 2.0.0")
    assert secret not in await page.content()

    phone = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    small = await phone.new_page()
    await log_in(small, server, "root", "/marketplace/disk_probe")
    await expect(small.get_by_test_id("remove")).to_be_in_viewport()  # an admin's buttons come first on a phone
    await no_sideways_scroll(small)
    await small.screenshot(path=str(artifacts_dir / "marketplace-detail-admin-375.png"), full_page=True)
    await phone.close()

    await page.goto(f"{server}/marketplace/disk_probe")
    await page.get_by_test_id("remove").click()
    await expect(result).to_contain_text("Removed disk_probe 1.1.0.", timeout=INSTALL_MS)
    await expect(page.get_by_test_id("install")).to_be_visible()
    with Session(engine) as session:
        assert session.get(InstalledAgent, "disk_probe") is None
        query = select(AuditEvent.action).where(AuditEvent.target_id == "disk_probe").order_by(col(AuditEvent.id))
        assert session.exec(query).all() == ["agent.install", "agent.update", "agent.remove"]


async def test_viewers_cannot_install_and_forged_posts_are_refused(index, session_as, engine):
    viewer, viewer_csrf = await session_as("viewer", "vic")
    page = await viewer.get("/marketplace/disk_probe")
    assert page.status_code == 200 and 'data-testid="admin-actions"' not in page.text
    assert 'name="version"' not in page.text
    for path in ("disk_probe/install", "disk_probe/update", "disk_probe/remove", "reviews/1/hide"):
        forged = await viewer.post(f"/marketplace/{path}", data={"csrf_token": viewer_csrf})
        assert forged.status_code == 403, (path, forged.text)
    assert (await viewer.get("/marketplace/disk_probe/update")).status_code == 403
    admin, admin_csrf = await session_as("admin", "root")
    assert (await admin.post("/marketplace/disk_probe/install", data={})).status_code == 403  # no CSRF token
    wrong = await admin.post("/marketplace/disk_probe/install", data={"csrf_token": admin_csrf[::-1]})
    assert wrong.status_code == 403
    # Mistakes are the page with the reason, not a 500: a version nobody offers, an agent nobody offers.
    missing = await admin.post("/marketplace/disk_probe/install", data={"csrf_token": admin_csrf, "version": "7.7"})
    assert missing.status_code == 404 and "has no version" in missing.text
    assert (await admin.post("/marketplace/nobody_has/install", data={"csrf_token": admin_csrf})).status_code == 404
    assert (await admin.get("/marketplace/disk_probe/update")).status_code == 404  # not installed
    bad_rating = await viewer.post("/marketplace/disk_probe/review", data={"csrf_token": viewer_csrf, "rating": "9"})
    assert bad_rating.status_code == 422 and "from 1 to 5" in bad_rating.text
    with Session(engine) as session:
        assert session.exec(select(InstalledAgent)).all() == []
        assert session.exec(select(AgentReview)).all() == []


async def test_an_unreadable_index_or_none_configured_never_breaks_the_page(
    index, settings, session_as, tmp_path: Path
):
    viewer, _ = await session_as("viewer", "vic")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    settings.agent_indexes = [*settings.agent_indexes, IndexSource(name="garbage", source=str(garbage))]
    shown = await viewer.get("/marketplace")
    assert shown.status_code == 200
    assert "Index garbage</strong> was left out" in shown.text and "Index mirror</strong> was left out" in shown.text
    assert 'data-agent="disk_probe"' in shown.text
    assert (await viewer.get("/marketplace?capability=juggling&sort=cheapest")).status_code == 200  # ignored
    settings.agent_indexes = []
    empty = await viewer.get("/marketplace")
    assert empty.status_code == 200 and 'data-testid="marketplace-empty"' in empty.text
    assert "AGENT_INDEXES" in empty.text


async def test_reviews_are_written_edited_hidden_by_an_admin_and_deleted(server, browser, engine, index):
    make_user(engine, "viewer", username="vera")
    make_user(engine, "viewer", username="walt")
    make_user(engine, "admin", username="root")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    problems = watch_console(page)
    await log_in(page, server, "vera", "/marketplace/disk_probe")
    await page.select_option("select[name=rating]", "4")
    await page.fill("textarea[name=body]", "Works <b>well</b> on /var")
    await page.get_by_test_id("save-review").click()
    await expect(page.get_by_test_id("notice")).to_have_text("Your review is saved.")
    mine = page.get_by_test_id("review-vera")
    await expect(mine).to_contain_text("Works <b>well</b> on /var")  # as text
    await expect(page.get_by_test_id("reviews").get_by_test_id("rating").first).to_contain_text("4.0 / 5 (1 rating)")
    # Editing replaces it (one review per user per agent); the form comes back filled in.
    await expect(page.locator("textarea[name=body]")).to_have_value("Works <b>well</b> on /var")
    await page.select_option("select[name=rating]", "2")
    await page.fill("textarea[name=body]", "Slower than promised")
    await page.get_by_test_id("save-review").click()
    await expect(mine).to_contain_text("Slower than promised")
    await expect(page.get_by_test_id("reviews").get_by_test_id("rating").first).to_contain_text("2.0 / 5 (1 rating)")
    assert problems == []

    admin_context = await browser.new_context(viewport={"width": 1280, "height": 900})
    admin = await admin_context.new_page()
    await log_in(admin, server, "root", "/marketplace/disk_probe")
    with Session(engine) as session:
        (review,) = session.exec(select(AgentReview)).all()
    await admin.locator(f"li[data-review='{review.id}'] input[name=reason]").fill("off topic")
    await admin.get_by_test_id(f"hide-{review.id}").click()
    await expect(admin.get_by_test_id("notice")).to_contain_text("The review is hidden")
    await expect(admin.get_by_test_id("hidden-mark")).to_have_text("hidden by root")
    await expect(admin.get_by_test_id("review-vera")).to_contain_text("Why: off topic")

    await page.reload()  # its author still sees it, marked; nobody else does, and it no longer counts
    await expect(page.get_by_test_id("hidden-mark")).to_have_text("hidden by root")
    await expect(page.get_by_test_id("reviews").get_by_test_id("rating").first).to_contain_text("no ratings yet")
    other_context = await browser.new_context()
    other = await other_context.new_page()
    await log_in(other, server, "walt", "/marketplace/disk_probe")
    await expect(other.get_by_test_id("review-vera")).to_have_count(0)

    await admin.get_by_test_id(f"show-{review.id}").click()
    await expect(admin.get_by_test_id("notice")).to_have_text("The review is shown again.")
    await other.reload()
    await expect(other.get_by_test_id("review-vera")).to_contain_text("Slower than promised")

    await page.get_by_test_id("delete-review").click()
    await expect(page.get_by_test_id("notice")).to_have_text("Your review is deleted.")
    await expect(page.get_by_test_id("review-vera")).to_have_count(0)
    with Session(engine) as session:
        query = select(AuditEvent.action).where(col(AuditEvent.action).startswith("agent.review"))
        assert session.exec(query.order_by(col(AuditEvent.id))).all() == [
            "agent.review.create",
            "agent.review.update",
            "agent.review.hide",
            "agent.review.show",
            "agent.review.delete",
        ]
    await admin_context.close()
    await other_context.close()
