"""The dry run's page (issue 23): the "nothing was changed" banner, the run graph in dry-run words (ran read-only,
would run, skipped, would ask), the per-step report, a live update while the run goes on (no reload), and no
sideways scroll at 375 px."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from core.commands import CommandRule
from tests.activities.test_remediate_command import script
from tests.factories import make_user
from tests.peers import http_service
from tests.web.conftest import log_in
from tests.web.test_live_pages import assert_not_reloaded, live, mark_page
from tests.workflows.test_dry_run import wait_for_dry_run


def node(page, step_id: str):
    return page.locator(f'[data-testid=dry-run-graph] [data-node="{step_id}"]')


async def test_the_dry_run_page_shows_the_banner_the_graph_and_the_report_live(
    server, browser, api, client_as, engine, settings, worker, tmp_path: Path, artifacts_dir
):
    marker = tmp_path / "restarted"
    restart = [script(tmp_path, "restart.sh", 'echo restarted >> "$1"\n'), str(marker)]
    settings.command_allowlist = [CommandRule(argv=restart)]
    make_user(engine, "viewer", username="vera")
    with http_service() as (url, slow):
        slow.delay = 4.0  # the read-only check is still running when the page opens
        body = {
            "id": "slow-fix", "name": "Slow fix",
            "steps": [
                {"id": "check", "agent": "monitor", "params": {"check": {"type": "http", "url": url},
                                                                "timeout_seconds": 30}},
                {"id": "restart", "agent": "remediate_command", "depends_on": ["check"], "params": {"argv": restart},
                 "instructions": "restart <script>alert(1)</script>"},
                {"id": "page_oncall", "agent": "noop", "depends_on": ["check"],
                 "when": "steps.check.output.ok == false"},
            ],
        }  # fmt: skip
        assert (await api.post("/api/playbooks", json=body)).status_code == 201
        responder = await client_as("responder", "rita")
        started = (await responder.post("/api/playbooks/slow-fix/dry-runs", json={})).json()
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await log_in(page, server, "vera", started["url"])
        await expect(page.get_by_test_id("dry-run-banner")).to_contain_text("DRY RUN — nothing was changed")
        await live(page)
        await mark_page(page)
        await expect(page.get_by_test_id("dry-run-status")).to_have_text("running")
        await expect(page.get_by_test_id("dry-run-status")).to_have_text("completed", timeout=30_000)
        await assert_not_reloaded(page)
        await wait_for_dry_run(api, started["id"])
    assert not marker.exists()
    await expect(node(page, "check")).to_contain_text("ran read-only")
    await expect(node(page, "restart")).to_contain_text("would run")
    await expect(node(page, "restart")).to_contain_text("would ask for approval")
    await expect(node(page, "page_oncall")).to_contain_text("skipped")
    report = page.get_by_test_id("dry-run-report")
    await expect(report.locator("#step-restart")).to_contain_text(f'would run argv ["{restart[0]}", "{marker}"]')
    await expect(report.locator("#step-restart")).to_contain_text("would ask role approver or above (risk high")
    await expect(report.locator("#step-restart")).to_contain_text("restart <script>alert(1)</script>")  # as text
    await expect(report.locator("#step-page_oncall")).to_contain_text("condition is false")
    await node(page, "restart").locator("a").click()
    assert page.url.endswith("#step-restart")
    await page.screenshot(path=str(artifacts_dir / "dry-run-desktop.png"), full_page=True)
    await page.goto(f"{server}/playbooks/slow-fix")  # the playbook's page lists its dry runs
    await expect(page.get_by_test_id("dry-runs")).to_contain_text(f"#{started['id']} v1 completed by rita")
    await page.get_by_test_id("dry-runs").get_by_role("link", name=f"#{started['id']}").click()
    await expect(page.get_by_test_id("dry-run-banner")).to_be_visible()

    phone = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    small = await phone.new_page()
    await log_in(small, server, "vera", started["url"])
    await expect(small.get_by_test_id("dry-run-banner")).to_be_visible()
    await small.locator("#step-restart details summary").click()
    width = await small.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the dry run page scrolls sideways at 375 px ({width} px wide)"
    await small.screenshot(path=str(artifacts_dir / "dry-run-375.png"), full_page=True)
    await phone.close()
