"""The run graph (issue 22) on a real run, in a real Chromium: a playbook with a parallel join, a branch its `when`
skips and a step that fails and is retried with new params; steps added, edited and removed at run time; the
graph updating live; a step's detail (messages, context snapshot, input, output, attempts); two runs of a
reopened incident compared; a viewer sees it all; 375 px has no sideways page scroll."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.factories import make_user, wait_for_workflow
from tests.web.conftest import log_in
from tests.web.test_live_pages import assert_not_reloaded, live, mark_page
from tests.workflows.test_engine import run_playbook, step, wait_until, workflow_status

SKIP_WHEN = "!(steps.merge.output.ok == true)"
PLAYBOOK = [
    step("start", params={"summary": "checked the service: errors on /checkout"}),
    step("logs", "noop", "start", params={"summary": "logs: 42 timeouts to the database"}),
    step("metrics", "noop", "start", params={"summary": "metrics: p95 latency 4 s"}),
    step("merge", "noop", "logs", "metrics", params={"summary": "both point at the database"}),
    step("remediate", "noop", "merge", when=SKIP_WHEN),
    step(
        "fix",
        "noop",
        "merge",
        params={"ok": False, "summary": "restart did not help"},
        fail_on_negative=True,
        retry={"max_attempts": 1},
    ),
    step("report", "noop", "fix", params={"summary": "draft report"}),
    step("cleanup", "noop", "fix"),
]
FIXED = {"ok": True, "summary": "restarted the pool: fixed"}


async def failed_run(api, engine, settings) -> dict:
    """The playbook run up to its failed step, with a step added, one edited and one removed meanwhile."""
    settings.retry_window_seconds = 600
    incident = await run_playbook(api, PLAYBOOK)
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: workflow_status(engine, workflow_id) == "failed", what="the fix step to fail")
    base = f"/api/workflows/{workflow_id}"
    edited = await api.patch(f"{base}/steps/report", json={"params": {"summary": "final report"}})
    assert edited.status_code == 200, edited.text
    assert (await api.delete(f"{base}/steps/cleanup")).status_code == 200
    added = await api.post(
        f"{base}/steps", json={"step": {"id": "notify", "agent": "noop", "depends_on": ["report"], "params": {}}}
    )
    assert added.status_code == 200, added.text
    return incident


def node(page, step_id: str):
    return page.locator(f'#run-graph [data-node="{step_id}"]')


async def test_run_graph_of_a_real_run_and_a_steps_detail(
    server, browser, api, client_as, engine, temporal_client, worker, settings, artifacts_dir
):
    incident = await failed_run(api, engine, settings)
    workflow_id = incident["workflow_id"]
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    run_url = f"/incidents/{incident['id']}/run"
    await log_in(page, server, "vera", run_url)
    await live(page)
    await mark_page(page)

    await expect(node(page, "fix")).to_contain_text("failed")
    await expect(node(page, "fix")).to_contain_text("restart did not help")
    await expect(node(page, "remediate")).to_contain_text("skipped")
    await expect(node(page, "remediate")).to_contain_text("when !(steps.merge.output.ok")
    await expect(node(page, "report")).to_contain_text("params edited")
    await expect(node(page, "notify")).to_contain_text("added at run time")
    await expect(node(page, "cleanup")).to_contain_text("removed at run time")
    assert "rg-removed" in await node(page, "cleanup").get_attribute("class")
    for step_id in ("logs", "metrics"):  # parallel branches: the same layer, side by side
        await expect(node(page, step_id)).to_contain_text("completed")
    logs_box = await node(page, "logs").locator("rect.dag-box").bounding_box()
    metrics_box = await node(page, "metrics").locator("rect.dag-box").bounding_box()
    assert logs_box["y"] == metrics_box["y"] and logs_box["x"] != metrics_box["x"]
    await expect(node(page, "merge")).to_contain_text("join all")
    await expect(node(page, "start").locator(".dag-badge-text")).to_have_text("No")  # badge, not colour alone
    assert "agent-c7" in await node(page, "start").get_attribute("class")  # noop's palette slot
    await page.screenshot(path=str(artifacts_dir / "run-graph-failed.png"), full_page=True)

    # Retried through the API: the graph follows live, without a reload.
    retried = await api.post(f"/api/workflows/{workflow_id}/retry", json={"step_id": "fix", "params": FIXED})
    assert retried.status_code == 200, retried.text
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    await expect(node(page, "fix")).to_contain_text("completed", timeout=20_000)
    await expect(node(page, "fix")).to_contain_text("attempt 1 · run 2")
    await expect(node(page, "fix")).to_contain_text("params edited")
    await expect(node(page, "notify")).to_contain_text("completed", timeout=20_000)
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=20_000)
    await assert_not_reloaded(page)

    # Click-through: the step's messages, what it saw, its input and output, its attempts, in the side panel.
    await node(page, "fix").locator("a").click()
    panel = page.get_by_test_id("step-panel")
    await expect(panel.get_by_test_id("step-detail")).to_have_attribute("data-step", "fix")
    await expect(panel.get_by_test_id("step-messages")).to_contain_text("restart did not help")
    await expect(panel.get_by_test_id("step-messages")).to_contain_text("restarted the pool: fixed")
    await expect(panel.get_by_test_id("step-snapshots").locator("li")).to_have_count(2)  # one per run
    await expect(panel.get_by_test_id("step-snapshots")).to_contain_text("checked the service")  # what it saw
    await expect(panel.get_by_test_id("step-params")).to_contain_text('"summary": "restarted the pool: fixed"')
    await expect(panel.get_by_test_id("step-summary")).to_have_text("restarted the pool: fixed")
    await expect(panel.get_by_test_id("step-attempts").locator("tbody tr")).to_have_count(2)
    assert page.url.endswith(run_url)  # stayed on the run page
    await expect(node(page, "fix")).to_have_class("dag-node rg-node agent-c7 rg-completed rg-edited rg-selected")
    await node(page, "remediate").locator("a").click()
    await expect(panel.get_by_test_id("skip-reason")).to_have_text(f"when {SKIP_WHEN} → false")
    await page.screenshot(path=str(artifacts_dir / "run-graph-desktop.png"), full_page=True)

    # A phone: the page never scrolls sideways (the graph scrolls inside its own box).
    phone = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    small = await phone.new_page()
    await log_in(small, server, "vera", run_url)
    await expect(small.locator('[data-node="fix"]')).to_contain_text("completed")
    width = await small.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the run page scrolls sideways at 375 px ({width} px wide)"
    await small.locator('[data-node="fix"] a').click()
    await expect(small.get_by_test_id("step-detail")).to_be_visible()
    width = await small.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the step panel scrolls sideways at 375 px ({width} px wide)"
    await small.screenshot(path=str(artifacts_dir / "run-graph-375.png"), full_page=True)
    await phone.close()

    # Without JavaScript: a viewer's plain GETs give the graph with links, and each step's page.
    viewer = await client_as("viewer")
    html = (await viewer.get(run_url)).text
    assert "<svg" in html and f'href="/incidents/{incident["id"]}/run/steps/fix?workflow={workflow_id}"' in html
    assert 'style="' not in html.split("<main", 1)[1]
    step_page = await viewer.get(f"/incidents/{incident['id']}/run/steps/merge")
    assert step_page.status_code == 200 and "both point at the database" in step_page.text
    assert (await viewer.get(f"/incidents/{incident['id']}/run/steps/ghost")).status_code == 404
    assert (await viewer.get(f"{run_url}?workflow=incident-999999")).status_code == 404
    assert (await viewer.get(f"/incidents/{incident['id']}/run/graph")).status_code == 200


async def test_compare_two_runs_of_a_reopened_incident(
    server, browser, api, client_as, engine, temporal_client, worker, settings, artifacts_dir
):
    incident = await failed_run(api, engine, settings)
    first = incident["workflow_id"]
    retried = await api.post(f"/api/workflows/{first}/retry", json={"step_id": "fix", "params": FIXED})
    assert retried.status_code == 200, retried.text
    await wait_for_workflow(temporal_client, first)

    for _ in range(300):  # the projection resolves the incident just after the run's end
        if (await api.get(f"/api/incidents/{incident['id']}")).json()["status"] == "resolved":
            break
        await asyncio.sleep(0.1)
    reopened = await api.post(f"/api/incidents/{incident['id']}/status", json={"status": "reopened"})
    assert reopened.status_code == 200, reopened.text
    second = f"{first}-run2"
    assert reopened.json()["workflow_id"] == second
    await wait_until(lambda: workflow_status(engine, second) == "failed", what="run 2's fix step to fail")

    make_user(engine, "viewer", username="vic")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    compare_url = f"/incidents/{incident['id']}/runs/compare"
    await log_in(page, server, "vic", f"/incidents/{incident['id']}")
    await expect(page.get_by_test_id("compare-runs-link")).to_have_text("Compare 2 runs")  # the incident page links it
    await page.get_by_test_id("compare-runs-link").click()
    await page.wait_for_url(f"{server}{compare_url}")
    table = page.get_by_test_id("compare-table")
    await expect(table.locator("thead th")).to_have_count(3)  # step, run 1, run 2
    fix = table.locator('tr[data-step="fix"]')
    await expect(fix).to_have_attribute("data-differs", "yes")
    await expect(fix).to_contain_text("≠ differs")  # not colour alone
    await expect(fix.locator("td").nth(0)).to_contain_text("completed")
    await expect(fix.locator("td").nth(0)).to_contain_text("restarted the pool: fixed")
    await expect(fix.locator("td").nth(1)).to_contain_text("failed")
    await expect(table.locator('tr[data-step="start"]')).to_have_attribute("data-differs", "no")
    notify = table.locator('tr[data-step="notify"]')  # added at run time in run 1 only
    await expect(notify.locator("td").nth(1)).to_contain_text("not in this run")
    await expect(page.get_by_test_id("compare-graph")).to_have_count(2)
    await page.screenshot(path=str(artifacts_dir / "run-compare-desktop.png"), full_page=True)

    await page.click("text=run 2")
    await expect(page.locator('#run-graph [data-node="fix"]')).to_contain_text("failed")
    await expect(page.get_by_test_id("compare-link")).to_be_visible()

    await page.set_viewport_size({"width": 375, "height": 812})
    await page.goto(f"{server}{compare_url}")
    await expect(page.get_by_test_id("compare-table")).to_be_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the compare page scrolls sideways at 375 px ({width} px wide)"
    await page.screenshot(path=str(artifacts_dir / "run-compare-375.png"), full_page=True)

    viewer = await client_as("viewer")
    plain = await viewer.get(compare_url)
    assert plain.status_code == 200 and plain.text.count("<svg") == 2
