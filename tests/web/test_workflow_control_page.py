"""Controlling a run from the incident page (issue 22): retry a failed step with edited params, abort with a reason,
edit, remove and add pending steps — role-guarded, CSRF-checked, audited and validated as the API is.

The flows run in a real Chromium against a real worker and Temporal dev server; the refusals (403, 422, 409) are
checked with a plain HTTP client logged in with a session cookie, as a forger would be.
"""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.async_api import Page, expect
from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import EventType

from core.audit import AuditEvent
from core.payloads import WorkflowState
from tests.factories import make_user, wait_for_workflow
from tests.web.conftest import log_in
from tests.web.test_live_pages import assert_not_reloaded, live, mark_page
from tests.workflows.test_engine import run_playbook, sleep, step, wait_until, workflow_status

SECRET = "tok-4f9c2a7e1b"


def stuck_playbook() -> list[dict[str, Any]]:
    """`stuck` times out (one attempt) and the run waits for a retry; `before` completed, `after` never ran."""
    return [
        step("before", "noop", params={"summary": "looked first"}),
        sleep("stuck", 30, "before", timeout_seconds=1, retry={"max_attempts": 1}),
        step("after", "noop", "stuck", params={"summary": "ran after the retry"}),
    ]


async def failed_run(api, engine, settings, steps: list[dict[str, Any]]) -> dict[str, Any]:
    settings.retry_window_seconds = 600
    incident = await run_playbook(api, steps)
    await wait_until(lambda: workflow_status(engine, incident["workflow_id"]) == "failed", what="the step to fail")
    return incident


async def scheduled(temporal_client, workflow_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every agent activity the run scheduled, in order: (step id, the params it was given)."""
    history = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
    found = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        payloads = event.activity_task_scheduled_event_attributes.input.payloads
        data = json.loads(payloads[0].data) if payloads else {}
        if isinstance(data, dict) and "step_id" in data and "params" in data:
            found.append((data["step_id"], data["params"]))
    return found


def audit_rows(engine, workflow_id: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(AuditEvent).where(AuditEvent.target_id == workflow_id).order_by(col(AuditEvent.id))
            ).all()
        )


async def query(temporal_client, workflow_id: str) -> WorkflowState:
    return await temporal_client.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState)


async def live_refresh(page: Page) -> None:
    """Redraw the workflow section as a live event does, and wait until the redraw is on the page."""
    await page.evaluate(
        """() => new Promise((done) => {
            const where = document.getElementById("workflow");
            where.addEventListener("htmx:afterSwap", function drawn(evt) {
                const cause = evt.detail.requestConfig && evt.detail.requestConfig.triggeringEvent;
                if (!cause || !cause.detail || !cause.detail.probe) return;  // another redraw
                where.removeEventListener("htmx:afterSwap", drawn);
                setTimeout(done, 0);
            });
            document.body.dispatchEvent(new CustomEvent("live-step", {detail: {probe: true}}));
        })"""
    )


async def no_horizontal_overflow(page: Page) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


# ---- the flows, in Chromium -------------------------------------------------------------------------------------


async def test_retry_from_the_page_reruns_only_the_failed_step_with_the_edited_params(
    server, browser, api, engine, temporal_client, worker, settings, artifacts_dir
):
    incident = await failed_run(api, engine, settings, stuck_playbook())
    workflow_id = incident["workflow_id"]
    before_retry = await scheduled(temporal_client, workflow_id)
    assert [s for s, _ in before_retry] == ["before", "stuck"]
    make_user(engine, "responder", username="rita")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, server, "rita", f"/incidents/{incident['id']}")
    await live(page)
    await mark_page(page)

    await page.get_by_test_id("retry-stuck").click()
    form = page.get_by_test_id("control-form-retry")
    seconds = form.locator("[name='p.seconds']")
    await expect(seconds).to_have_value("30")  # pre-filled from the step's params
    await expect(form).to_contain_text("(number)")
    await form.scroll_into_view_if_needed()
    await page.screenshot(path=str(artifacts_dir / "control-retry-desktop.png"), full_page=True)
    await page.set_viewport_size({"width": 375, "height": 800})
    await no_horizontal_overflow(page)
    await form.scroll_into_view_if_needed()
    await page.screenshot(path=str(artifacts_dir / "control-retry-375.png"))

    # A value the agent's schema refuses: the reason next to the field, nothing sent to the run.
    await seconds.fill("-5")
    await page.get_by_test_id("confirm-retry").click()
    error = form.locator("[data-param=seconds] [data-testid=field-error]")
    await expect(error).to_contain_text("params.seconds: -5 is less than the minimum of 0")
    await expect(form.locator("[name='p.seconds']")).to_have_value("-5")  # what was typed is kept
    await no_horizontal_overflow(page)
    assert [s.status for s in (await query(temporal_client, workflow_id)).steps] == ["completed", "failed", "pending"]

    await form.locator("[name='p.seconds']").fill("0.2")
    await page.get_by_test_id("confirm-retry").click()
    await expect(page.get_by_test_id("control-notice")).to_have_text("Step stuck runs again.")
    await expect(page.get_by_test_id("workflow-status")).to_have_text("completed", timeout=30_000)  # live
    await expect(page.locator("[data-step=after]")).to_have_attribute("data-status", "completed")
    await expect(page.get_by_test_id("workflow-controls")).to_have_count(0)  # an ended run has no controls
    await assert_not_reloaded(page)

    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    after_retry = (await scheduled(temporal_client, workflow_id))[len(before_retry) :]
    assert after_retry == [("stuck", {"seconds": 0.2}), ("after", {"summary": "ran after the retry"})]
    assert next(s for s in state.steps if s.step_id == "stuck").runs == 2
    (audited,) = audit_rows(engine, workflow_id)
    assert (audited.action, audited.actor, audited.actor_kind) == ("workflow.retry", "rita", "session")
    assert audited.after["step_id"] == "stuck" and audited.after["params"] == {"seconds": 0.2}


async def test_abort_from_the_page_with_a_reason(server, browser, api, engine, temporal_client, worker):
    incident = await run_playbook(api, [sleep("hold", 60), step("later", "noop", "hold")])
    workflow_id = incident["workflow_id"]
    make_user(engine, "responder", username="abe")
    page = await browser.new_page()
    await log_in(page, server, "abe", f"/incidents/{incident['id']}")
    await live(page)
    await mark_page(page)
    await expect(page.locator("[data-step=hold]")).to_have_attribute("data-status", "running")

    await page.get_by_test_id("abort").click()
    await page.fill("#abort-reason", "wrong runbook for this service")
    await page.get_by_test_id("confirm-abort").click()
    await expect(page.get_by_test_id("workflow-status")).to_have_text("cancelled", timeout=20_000)
    await expect(page.locator("#workflow")).to_contain_text("aborted by abe: wrong runbook for this service")
    await expect(page.locator("[data-step=later]")).to_have_attribute("data-status", "cancelled")
    await assert_not_reloaded(page)
    _, state = await wait_for_workflow(temporal_client, workflow_id)
    assert state.status == "cancelled" and state.error == "aborted by abe: wrong runbook for this service"
    (audited,) = audit_rows(engine, workflow_id)
    assert (audited.action, audited.actor, audited.after["reason"]) == (
        "workflow.abort", "abe", "wrong runbook for this service"
    )  # fmt: skip


async def test_edit_remove_and_add_pending_steps_from_the_page(server, browser, api, engine, temporal_client, worker):
    incident = await run_playbook(
        api,
        [
            sleep("gate", 20),
            step("next", "noop", "gate", params={"summary": "as written"}),
            step("spare", "noop", "gate"),
        ],
    )
    workflow_id = incident["workflow_id"]
    make_user(engine, "responder", username="pat")
    page = await browser.new_page()
    await log_in(page, server, "pat", f"/incidents/{incident['id']}")
    await live(page)
    await mark_page(page)

    await page.get_by_test_id("edit-next").click()
    form = page.get_by_test_id("control-form-params")
    await expect(form.locator("[name='p.summary']")).to_have_value("as written")
    await form.locator("[name='p.summary']").fill("edited on the page")
    await page.get_by_test_id("confirm-params").click()
    await expect(page.get_by_test_id("control-notice")).to_have_text("Step next's params changed.")
    await live_refresh(page)  # the run's next event redraws the section: what the change said stays
    await expect(page.get_by_test_id("control-notice")).to_have_text("Step next's params changed.")

    page.once("dialog", lambda dialog: dialog.accept())  # "Remove step spare from this run?"
    await page.get_by_test_id("remove-spare").click()
    await expect(page.get_by_test_id("control-notice")).to_have_text("Step spare removed.")
    await expect(page.locator("[data-pending-step=spare]")).to_have_count(0)
    await expect(page.locator("[data-pending-step=next] code")).to_contain_text("edited on the page")

    # The agent is chosen the moment the form is on screen (the task right after its swap), quicker than any hand:
    # the form must already be wired (htmx's default 20 ms settle delay lost this choice).
    await page.evaluate(
        """() => new Promise((done) => {
            const panel = document.getElementById("wf-panel");
            panel.addEventListener("htmx:afterSwap", () => setTimeout(() => {
                const agent = document.getElementById("add-agent");
                agent.value = "noop";
                agent.dispatchEvent(new Event("change", {bubbles: true}));
                done();
            }, 0), {once: true});
            document.querySelector("[data-testid=add-step]").click();
        })"""
    )
    form = page.get_by_test_id("control-form-add")
    await form.locator("#add-id").fill("extra")
    # htmx loads noop's params fields
    await expect(form.locator("[name='p.summary']")).to_be_visible()
    await form.locator("input[name=depends_on][value=next]").check()
    await form.locator("[name='p.summary']").fill("added on the page")
    await page.get_by_test_id("confirm-add").click()
    await expect(page.get_by_test_id("control-notice")).to_have_text("Step extra added.")
    await expect(page.get_by_test_id("pending-steps")).to_contain_text("extra noop pending")

    await expect(page.get_by_test_id("workflow-status")).to_have_text("completed", timeout=40_000)
    await assert_not_reloaded(page)
    outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    outputs = {s.step_id: (s.output or {}).get("summary") for s in state.steps}
    assert outputs == {"gate": "waited 20s", "next": "edited on the page", "extra": "added on the page"}
    actions = [(a.action, a.actor, a.actor_kind) for a in audit_rows(engine, workflow_id)]
    assert actions == [
        ("workflow.update_step_params", "pat", "session"),
        ("workflow.remove_step", "pat", "session"),
        ("workflow.add_step", "pat", "session"),
    ]


# ---- refusals, over plain HTTP ----------------------------------------------------------------------------------


async def test_a_viewer_sees_no_controls_and_forged_posts_are_refused(
    session_as, api, engine, temporal_client, worker, settings
):
    incident = await failed_run(api, engine, settings, stuck_playbook())
    workflow_id = incident["workflow_id"]
    page_url = f"/incidents/{incident['id']}"
    retry_url = f"{page_url}/workflow/steps/stuck/retry"
    viewer, viewer_csrf = await session_as("viewer", "vera")
    responder, responder_csrf = await session_as("responder", "rudi")
    seen = await viewer.get(page_url)
    assert seen.status_code == 200 and "stuck" in seen.text
    for control in ("workflow-controls", "retry-stuck", "Abort…", "Add a step…", "/workflow/"):
        assert control not in seen.text
    assert 'data-testid="retry-stuck"' in (await responder.get(page_url)).text

    forged = {"csrf_token": viewer_csrf, "p.seconds": "0.1"}
    assert (await viewer.post(retry_url, data=forged)).status_code == 403  # the viewer's own valid token
    assert (await viewer.post(f"{page_url}/workflow/abort", data={"csrf_token": viewer_csrf})).status_code == 403
    assert (await viewer.get(retry_url)).status_code == 403
    assert (await responder.post(retry_url, data={"p.seconds": "0.1"})).status_code == 403  # no token
    wrong = {"csrf_token": "x" * len(responder_csrf), "p.seconds": "0.1"}
    assert (await responder.post(retry_url, data=wrong)).status_code == 403
    htmx = {"HX-Request": "true"}
    assert (await responder.post(retry_url, data={"p.seconds": "0.1"}, headers=htmx)).status_code == 403

    state = await query(temporal_client, workflow_id)
    assert state.changes == [] and [s.status for s in state.steps] == ["completed", "failed", "pending"]
    assert audit_rows(engine, workflow_id) == []
    assert (await api.post(f"/api/workflows/{workflow_id}/abort", json={"reason": "done"})).status_code == 200


async def test_invalid_values_are_422_next_to_their_field_and_refusals_409(
    session_as, api, engine, temporal_client, worker, settings
):
    incident = await failed_run(api, engine, settings, stuck_playbook())
    workflow_id = incident["workflow_id"]
    base = f"/incidents/{incident['id']}/workflow"
    client, csrf = await session_as("responder", "rosa")
    token = {"csrf_token": csrf}

    def field_error(html: str, name: str) -> str:
        found = re.search(rf'data-param="{name}".*?data-testid="field-error">([^<]*)<', html, re.S)
        return found[1] if found else ""

    not_a_number = await client.post(f"{base}/steps/stuck/retry", data={**token, "p.seconds": "soon"})
    assert not_a_number.status_code == 422
    assert field_error(not_a_number.text, "seconds") == "seconds must be a number"
    assert "<html" in not_a_number.text  # without JavaScript: the form on a page of its own
    too_low = await client.post(
        f"{base}/steps/stuck/retry", data={**token, "p.seconds": "-1"}, headers={"HX-Request": "true"}
    )
    assert too_low.status_code == 422 and "<html" not in too_low.text  # htmx: the form alone
    assert field_error(too_low.text, "seconds") == "step stuck: params.seconds: -1 is less than the minimum of 0"
    bad_json = await client.post(f"{base}/steps/stuck/retry", data={**token, "p.__other__": "{nope"})
    assert bad_json.status_code == 422 and "Other params is not valid JSON" in field_error(bad_json.text, "__other__")

    # The workflow's validator refuses what its state does not allow: 409, with its reason.
    duplicate = {**token, "id": "before", "agent": "noop", "risk": "low", "p.summary": "again"}
    refused = await client.post(f"{base}/add-step", data=duplicate, headers={"HX-Request": "true"})
    assert refused.status_code == 409
    assert "add_step refused: step before: a step with this id exists" in refused.text
    assert (await client.post(f"{base}/steps/before/retry", data=token)).status_code == 409  # not failed
    bad_id = await client.post(f"{base}/add-step", data={**duplicate, "id": "Bad Id"})
    assert bad_id.status_code == 422 and "step.id: String should match pattern" in bad_id.text

    # Without JavaScript: adding a step takes two posts (the agent, then its params); pending steps are a page.
    chosen = await client.post(f"{base}/add-step", data={**token, "id": "extra", "agent": "noop", "choose": "1"})
    assert chosen.status_code == 200 and 'name="p.summary"' in chosen.text and 'value="extra"' in chosen.text
    no_agent = await client.post(f"{base}/add-step", data={**token, "id": "extra"})
    assert no_agent.status_code == 422 and "agent: pick an agent" in no_agent.text
    pending = await client.get(f"{base}/pending")
    assert pending.status_code == 200 and "<html" in pending.text and 'data-pending-step="after"' in pending.text

    # Without JavaScript a done change goes back to the incident page.
    done = await client.post(f"{base}/abort", data={**token, "reason": "enough"})
    assert (done.status_code, done.headers["location"]) == (303, f"/incidents/{incident['id']}#workflow-title")
    assert [a.action for a in audit_rows(engine, workflow_id)] == ["workflow.abort"]


async def test_a_redacted_secret_left_as_shown_keeps_its_real_value(
    session_as, api, engine, temporal_client, worker, settings
):
    params = {"ok": False, "summary": "token refused", "api_token": SECRET}
    incident = await failed_run(api, engine, settings, [step("call", "noop", fail_on_negative=True, params=params)])
    workflow_id = incident["workflow_id"]
    url = f"/incidents/{incident['id']}/workflow/steps/call/retry"
    client, csrf = await session_as("responder", "sam")
    form = await client.get(url)
    assert form.status_code == 200
    assert SECRET not in form.text and "[REDACTED]" in form.text
    other = re.search(r'name="p.__other__"[^>]*>([^<]*)</textarea>', form.text)[1]
    shown = json.loads(other.replace("&#34;", '"').replace("&quot;", '"'))
    assert shown == {"api_token": "[REDACTED]"}

    edited_mask = {"csrf_token": csrf, "p.ok": "true", "p.summary": "ok",
                   "p.__other__": json.dumps({"api_token": "x[REDACTED]"})}  # fmt: skip
    refused = await client.post(url, data=edited_mask)
    assert refused.status_code == 422 and "still holds [REDACTED]" in refused.text
    assert SECRET not in refused.text

    as_shown = {**edited_mask, "p.__other__": json.dumps(shown), "p.summary": "token accepted"}
    done = await client.post(url, data=as_shown, headers={"HX-Request": "true"})
    assert done.status_code == 200 and done.headers["HX-Retarget"] == "#workflow"
    assert SECRET not in done.text
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    ran = await scheduled(temporal_client, workflow_id)
    assert ran[-1] == ("call", {"ok": True, "summary": "token accepted", "api_token": SECRET})  # the real token
    (audited,) = audit_rows(engine, workflow_id)
    assert audited.after["params"]["api_token"] == "[REDACTED]"  # the audit log keeps it masked
