"""The playbook editor without JavaScript (issue 23): the form posts back whole (add, remove, reorder steps; change
an agent), saves a new version with its message, answers 422 with every problem next to its field and nothing
typed lost, draws the draft's graph (a cycle too), checks a `when` as it is typed, previews markdown safely, and
refuses viewers (403 on forged posts) — through a client logged in with a session cookie, as a browser is."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlmodel import Session, col, select

from core.audit import AuditEvent
from core.identity import User
from core.tables import PlaybookVersion
from tests.conftest import app_client
from tests.factories import make_user

pytestmark = pytest.mark.db


def field_error(html: str, name: str) -> str | None:
    found = re.search(rf'data-field="{re.escape(name)}">([^<]*)<', html)
    return found[1] if found else None


def base_form(csrf: str, **extra: Any) -> dict[str, Any]:
    """A playbook `triage`: check, then logs and metrics in parallel, joined by merge (all), fix when not healthy."""
    form: dict[str, Any] = {
        "csrf_token": csrf, "is_new": "true", "id": "triage", "name": "Triage", "incident_type": "db-down",
        "description": "", "parallel": "true", "variable_count": "1", "v0.name": "region", "v0.type": "string",
        "v0.default": "eu-1", "v0.description": "", "step_count": "5",
    }  # fmt: skip
    steps = [
        ("check", [], ""),
        ("logs", ["check"], ""),
        ("metrics", ["check"], ""),
        ("merge", ["logs", "metrics"], ""),
        ("fix", ["merge"], "steps.merge.status == 'completed'"),
    ]
    for i, (sid, deps, when) in enumerate(steps):
        form.update({
            f"s{i}.id": sid, f"s{i}.agent": "noop", f"s{i}.instructions": f"Step **{sid}**", f"s{i}.risk": "low",
            f"s{i}.join": "all", f"s{i}.join_count": "", f"s{i}.when": when, f"s{i}.timeout_seconds": "60",
            f"s{i}.retry.max_attempts": "2", f"s{i}.retry.initial_interval_seconds": "1",
            f"s{i}.retry.backoff": "2", f"s{i}.retry.max_interval_seconds": "30", f"s{i}.on_failure": "fail",
            f"s{i}.depends_on": deps,
        })  # fmt: skip
    form.update(extra)
    return form


def versions(engine, playbook_id: str) -> list[PlaybookVersion]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(PlaybookVersion)
                .where(PlaybookVersion.playbook_id == playbook_id)
                .order_by(col(PlaybookVersion.version))
            ).all()
        )


async def test_save_new_playbook_then_a_new_version_with_its_message(session_as, engine):
    client, csrf = await session_as("admin", "ada")
    page = await client.get("/playbooks/_new")
    assert page.status_code == 200 and 'name="s0.agent"' in page.text
    approvers = {"approvers_teams": "sre", "s4.approvers_users": "ada, bo"}
    form = base_form(csrf, message="first cut", action="save", **approvers)
    saved = await client.post("/playbooks/_new", data=form)
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/playbooks/triage?version=1&saved=1"
    [v1] = versions(engine, "triage")
    steps = {s["id"]: s for s in v1.definition["steps"]}
    assert steps["merge"]["depends_on"] == ["logs", "metrics"] and steps["merge"]["join"]["strategy"] == "all"
    assert steps["fix"]["when"] == "steps.merge.status == 'completed'"
    assert steps["check"]["retry"]["max_attempts"] == 2 and v1.definition["variables"] == {"region": "eu-1"}
    assert v1.message == "first cut" and v1.created_by == "ada"
    assert v1.definition["approvers"] == {"users": [], "teams": ["sre"]}
    view = (await client.get("/playbooks/triage")).text
    assert "<title>Triage v1 · Playbooks · Agent Monitor</title>" in view  # the title is the title, nothing else
    assert view.count('id="sharing-title"') == 1
    assert steps["fix"]["approvers"] == {"users": ["ada", "bo"], "teams": []}

    view = await client.get("/playbooks/triage")
    assert "Triage" in view.text and 'data-node="merge"' in view.text and "join all" in view.text
    assert "<strong>check</strong>" in view.text  # instructions as markdown
    edit = await client.get("/playbooks/triage/edit")
    assert 'value="triage" maxlength="100" autocomplete="off" spellcheck="false" readonly' in edit.text
    form = base_form(csrf, is_new="false", name="Triage v2", message="renamed", action="save")
    second = await client.post("/playbooks/triage/edit", data=form)
    assert second.status_code == 303 and second.headers["location"] == "/playbooks/triage?version=2&saved=1"
    assert [(v.version, v.name, v.message) for v in versions(engine, "triage")] == [
        (1, "Triage", "first cut"),
        (2, "Triage v2", "renamed"),
    ]
    view = await client.get("/playbooks/triage?version=2&saved=1")
    assert "Saved as version 2." in view.text and "renamed" in view.text and "first cut" in view.text
    with Session(engine) as session:
        audited = session.exec(select(AuditEvent).where(AuditEvent.target_type == "playbook")).all()
    assert sorted(a.target_id for a in audited) == ["triage@1", "triage@2"]
    again = await client.post("/playbooks/_new", data=base_form(csrf, action="save"))
    assert again.status_code == 422 and "exists already" in (field_error(again.text, "id") or "")


async def test_buttons_add_remove_and_reorder_steps_without_losing_what_was_typed(session_as, engine):
    client, csrf = await session_as("admin", "ada")
    added = await client.post("/playbooks/_new", data=base_form(csrf, action="add", name="Typed <name>"))
    assert added.status_code == 200
    assert 'name="step_count" value="6"' in added.text and 'value="step_6"' in added.text
    assert 'value="Typed &lt;name&gt;"' in added.text and "steps.merge.status == &#39;completed&#39;" in added.text
    moved = await client.post("/playbooks/_new", data=base_form(csrf, action="up:4"))
    ids = re.findall(r'name="s\d\.id" value="([^"]+)"', moved.text)
    assert ids == ["check", "logs", "metrics", "fix", "merge"]
    removed = await client.post("/playbooks/_new", data=base_form(csrf, action="remove:1"))
    ids = re.findall(r'name="s\d\.id" value="([^"]+)"', removed.text)
    assert ids == ["check", "metrics", "merge", "fix"]
    # merge no longer depends on the removed step
    merge = removed.text.split('data-testid="step-2"')[1].split('data-testid="step-3"')[0]
    assert 'value="logs" checked' not in merge and 'value="metrics" checked' in merge
    # Without JavaScript, "Change agent" shows the new agent's params fields.
    changed = await client.post("/playbooks/_new", data=base_form(csrf, action="agent:0", **{"s0.agent": "sleep"}))
    assert 'name="s0.p.seconds"' in changed.text
    assert versions(engine, "triage") == []


async def test_every_problem_is_shown_next_to_its_field_and_nothing_is_saved(session_as, engine):
    client, csrf = await session_as("admin", "ada")
    bad = base_form(
        csrf,
        action="save",
        name="",
        **{
            "s4.when": "steps.merge.status ==",
            "s1.retry.max_attempts": "two",
            "s0.agent": "sleep",
            "s0.p.seconds": "soon",
            "v0.type": "integer",
            "v0.default": "x",
        },
    )
    answer = await client.post("/playbooks/_new", data=bad)
    assert answer.status_code == 422
    assert "must be a number" in field_error(answer.text, "s1.retry.max_attempts")
    assert "must be a number" in field_error(answer.text, "s0.p.seconds")
    assert "default" in field_error(answer.text, "v0.default")
    assert 'value="steps.merge.status =="' in answer.text  # what was typed stays
    # With the values that parse fixed, the model's own rules speak: the name, then the condition.
    fixed = {**bad, "s1.retry.max_attempts": "2", "s0.p.seconds": "1", "v0.default": "3"}
    answer = await client.post("/playbooks/_new", data=fixed)
    assert answer.status_code == 422 and "name" in field_error(answer.text, "name")
    answer = await client.post("/playbooks/_new", data={**fixed, "name": "Triage"})
    assert answer.status_code == 422
    assert "condition does not parse" in field_error(answer.text, "s4.when")
    cycle = {**fixed, "name": "Triage", "s4.when": "", "s0.depends_on": ["fix"]}
    answer = await client.post("/playbooks/_new", data=cycle)
    assert answer.status_code == 422 and "dependency cycle" in answer.text
    # The agent's params schema, checked by save_playbook: more seconds than sleep allows.
    schema = {**fixed, "name": "Triage", "s4.when": "", "s0.p.seconds": "100000"}
    answer = await client.post("/playbooks/_new", data=schema)
    assert answer.status_code == 422, answer.text
    assert "maximum" in field_error(answer.text, "s0.p.seconds")
    assert versions(engine, "triage") == []


async def test_viewers_see_no_edit_buttons_and_forged_posts_are_refused(session_as, engine):
    admin, admin_csrf = await session_as("admin", "ada")
    assert (await admin.post("/playbooks/_new", data=base_form(admin_csrf, action="save"))).status_code == 303
    viewer, csrf = await session_as("viewer", "vic")
    listing = await viewer.get("/playbooks")
    assert listing.status_code == 200 and "Triage" in listing.text
    assert "New playbook" not in listing.text and "/playbooks/triage/edit" not in listing.text
    view = await viewer.get("/playbooks/triage")
    assert view.status_code == 200 and 'data-testid="edit-playbook"' not in view.text
    assert (await viewer.get("/playbooks/_new")).status_code == 403
    assert (await viewer.get("/playbooks/triage/edit")).status_code == 403
    forged = base_form(csrf, action="save", id="forged")
    assert (await viewer.post("/playbooks/_new", data=forged)).status_code == 403
    again = base_form(csrf, action="save", is_new="false", name="Owned")
    assert (await viewer.post("/playbooks/triage/edit", data=again)).status_code == 403
    no_csrf = base_form("", action="save", id="nocsrf")
    assert (await admin.post("/playbooks/_new", data=no_csrf)).status_code == 403
    assert [v.version for v in versions(engine, "triage")] == [1]
    assert versions(engine, "forged") == versions(engine, "nocsrf") == []


async def test_draft_graph_when_check_and_markdown_preview(session_as):
    client, csrf = await session_as("admin", "ada")
    graph = await client.post("/playbooks/_draft/graph", data=base_form(csrf))
    assert graph.status_code == 200 and graph.text.count('data-node="') == 5
    assert "join all" in graph.text and "when steps.merge.status" in graph.text
    cyclic = await client.post("/playbooks/_draft/graph", data=base_form(csrf, **{"s0.depends_on": ["fix"]}))
    assert "dependency cycle" in cyclic.text and "dag-edge-reversed" in cyclic.text
    bad = await client.post("/playbooks/_draft/when", data={"csrf_token": csrf, "step": "4", "s4.when": "a ==("})
    assert "does not parse" in (field_error(bad.text, "s4.when") or "")
    good = await client.post("/playbooks/_draft/when", data={"csrf_token": csrf, "step": "4", "s4.when": "true"})
    assert "parses" in good.text and "field-error" not in good.text
    text = "<script>alert(1)</script> **bold** {{7*7}} [x](javascript:alert(1))"
    form = {"csrf_token": csrf, "step": "0", "s0.instructions": text}
    preview = await client.post("/playbooks/_draft/markdown", data=form)
    assert "<strong>bold</strong>" in preview.text and "{{7*7}}" in preview.text and "49" not in preview.text
    assert "<script" not in preview.text and "&lt;script&gt;" in preview.text and "href=" not in preview.text
    form = {"csrf_token": csrf, "step": "1", "s1.agent": "sleep"}
    params = await client.post("/playbooks/_draft/params", data=form)
    assert 'name="s1.p.seconds"' in params.text
    assert (await client.post("/playbooks/_draft/graph", data=base_form(""))).status_code == 403


async def test_diff_restore_and_fork_from_the_pages(session_as, engine):
    client, csrf = await session_as("admin", "ada")
    assert (await client.post("/playbooks/_new", data=base_form(csrf, action="save"))).status_code == 303
    form = base_form(csrf, is_new="false", action="save", message="slower <check>", **{"s0.timeout_seconds": "90"})
    assert (await client.post("/playbooks/triage/edit", data=form)).status_code == 303
    diff = await client.get("/playbooks/triage/diff")
    assert diff.status_code == 200 and "v1 → v2" in diff.text
    assert '<span class="diff-del">-  timeout_seconds: 60.0</span>' in diff.text
    assert '<span class="diff-add">+  timeout_seconds: 90.0</span>' in diff.text
    assert "slower &lt;check&gt;" in diff.text  # the message, escaped, in the version picker
    same = await client.get("/playbooks/triage/diff", params={"a": 2, "b": 2})
    assert 'data-testid="diff-empty"' in same.text
    restored = await client.post("/playbooks/triage/restore", data={"csrf_token": csrf, "version": "1"})
    assert restored.status_code == 303 and restored.headers["location"] == "/playbooks/triage?version=3&saved=1"
    v1, _, v3 = versions(engine, "triage")
    assert v3.message == "restored from v1"
    assert {k: v for k, v in v3.definition.items() if k != "version"} == {
        k: v for k, v in v1.definition.items() if k != "version"
    }
    page = await client.get("/playbooks/triage/fork", params={"version": 2})
    assert page.status_code == 200 and 'value="triage-copy"' in page.text
    forked = await client.post(
        "/playbooks/triage/fork",
        data={"csrf_token": csrf, "version": "2", "new_id": "triage-eu", "new_name": "Triage EU", "owner_team": ""},
    )
    assert forked.status_code == 303 and forked.headers["location"] == "/playbooks/triage-eu?version=1&saved=1"
    [fork] = versions(engine, "triage-eu")
    assert (fork.forked_from_id, fork.forked_from_version, fork.name) == ("triage", 2, "Triage EU")
    view = await client.get("/playbooks/triage-eu")
    assert 'href="/playbooks/triage?version=2">triage v2</a>' in view.text  # provenance shown
    taken = await client.post(
        "/playbooks/triage/fork", data={"csrf_token": csrf, "version": "2", "new_id": "triage-eu", "new_name": "x"}
    )
    assert taken.status_code == 409 and "taken" in field_error(taken.text, "new_id")
    viewer, viewer_csrf = await session_as("viewer", "vic")
    refused = await viewer.post("/playbooks/triage/restore", data={"csrf_token": viewer_csrf, "version": "1"})
    assert refused.status_code == 403
    assert len(versions(engine, "triage")) == 3


async def test_team_sharing_from_the_pages(session_as, app, engine):
    admin, csrf = await session_as("admin", "ada")
    _, token = make_user(engine, "admin", username="root")
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as api:
        team = (await api.post("/api/teams", json={"name": "sre"})).json()["id"]
        rosa, rosa_csrf = await session_as("responder", "rosa")
        val, _ = await session_as("viewer", "val")
        with Session(engine) as session:
            rosa_id = session.exec(select(User.id).where(User.username == "rosa")).one()
        assert (await api.put(f"/api/teams/{team}/members/{rosa_id}")).status_code == 200
    # A responder of sre creates a team-private playbook for sre.
    new = await rosa.get("/playbooks/_new")
    assert new.status_code == 200 and '<option value="sre"' in new.text
    form = base_form(rosa_csrf, action="save", owner_team="sre", visibility="team", id="sre-only")
    assert (await rosa.post("/playbooks/_new", data=form)).status_code == 303
    assert "sre-only" in (await rosa.get("/playbooks")).text
    # Outside the team it does not exist.
    assert "sre-only" not in (await val.get("/playbooks")).text
    assert (await val.get("/playbooks/sre-only")).status_code == 404
    # Admins see it and may open it to everyone.
    view = await admin.get("/playbooks/sre-only")
    assert "its owner team and admins only" in view.text
    shared = await admin.post("/playbooks/sre-only/sharing", data={"csrf_token": csrf, "owner_team": "sre",
                                                                   "visibility": "everyone"})  # fmt: skip
    assert shared.status_code == 303
    assert (await val.get("/playbooks/sre-only")).status_code == 200
    # A responder without a team may not create one; the admin-owned triage is not theirs to edit.
    assert (await admin.post("/playbooks/_new", data=base_form(csrf, action="save"))).status_code == 303
    assert (await rosa.get("/playbooks/triage/edit")).status_code == 403
    assert 'data-testid="edit-playbook"' in (await rosa.get("/playbooks/sre-only")).text


async def test_preview_with_variables_and_import_export_from_the_pages(session_as, engine):
    client, csrf = await session_as("admin", "ada")
    form = base_form(
        csrf,
        action="save",
        **{
            "s0.instructions": "Check {{service_name}} in **{{region}}** {{7*7}}",
            "s4.when": "vars.region == 'us-1'",
        },
    )
    assert (await client.post("/playbooks/_new", data=form)).status_code == 303
    page = await client.get("/playbooks/triage/preview")
    assert page.status_code == 200
    assert "Check sample-service in <strong>eu-1</strong> {{7*7}}" in page.text
    assert 'data-testid="unreachable"' in page.text and "vars.region" in page.text  # fix's when is false
    asked = await client.post(
        "/playbooks/triage/preview", data={"csrf_token": csrf, "var.region": "us-1", "var.incident.service": "cart"}
    )
    assert "Check cart in <strong>us-1</strong>" in asked.text and 'data-testid="unreachable"' not in asked.text
    wrong = await client.post("/playbooks/triage/preview", data={"csrf_token": csrf, "var.zone": "x"})
    assert wrong.status_code == 422 and "zone" in field_error(wrong.text, "variables")
    missing = await client.post("/playbooks/triage/preview", data={"csrf_token": csrf, "incident_id": "999999"})
    assert missing.status_code == 422 and field_error(missing.text, "incident_id")

    exported = await client.get("/api/playbooks/triage/export", params={"format": "yaml"})
    assert exported.status_code == 200
    text = exported.text.replace("id: triage", "id: triage-copy", 1)
    imported = await client.post("/playbooks/_import", data={"csrf_token": csrf, "format": "yaml", "text": text})
    assert imported.status_code == 200 and 'data-testid="import-result"' in imported.text, imported.text
    assert [v.version for v in versions(engine, "triage-copy")] == [1]
    again = await client.post("/playbooks/_import", data={"csrf_token": csrf, "format": "yaml", "text": text})
    assert "skipped" in again.text and [v.version for v in versions(engine, "triage-copy")] == [1]
    broken = text.replace("agent: noop", "agent: nobody", 1).replace("id: triage-copy", "id: broken", 1)
    refused = await client.post("/playbooks/_import", data={"csrf_token": csrf, "format": "yaml", "text": broken})
    assert refused.status_code == 422 and "unknown agent" in refused.text and "steps[0]" in refused.text
    assert versions(engine, "broken") == []
    upload = await client.post(
        "/playbooks/_import",
        data={"csrf_token": csrf, "format": "yaml"},
        files={"file": ("x.json", exported.text.encode(), "application/json")},
    )
    assert upload.status_code == 422  # YAML content in a .json file is read as JSON: refused, named
    viewer, viewer_csrf = await session_as("viewer", "vic")
    forged = await viewer.post("/playbooks/_import", data={"csrf_token": viewer_csrf, "format": "yaml", "text": text})
    assert forged.status_code == 403


async def test_a_dry_run_starts_from_the_preview_form(session_as, engine, worker):
    client, csrf = await session_as("admin", "ada")
    assert (await client.post("/playbooks/_new", data=base_form(csrf, action="save"))).status_code == 303
    started = await client.post("/playbooks/triage/dry-run", data={"csrf_token": csrf, "var.region": "us-1"})
    assert started.status_code == 303 and started.headers["location"].startswith("/dry-runs/"), started.text
    page = await client.get(started.headers["location"])
    assert page.status_code == 200 and "DRY RUN" in page.text
    viewer, viewer_csrf = await session_as("viewer", "vic")
    assert (await viewer.post("/playbooks/triage/dry-run", data={"csrf_token": viewer_csrf})).status_code == 403


async def test_a_long_playbook_lists_dependencies_as_ids_and_htmx_posts_carry_the_csrf_header(session_as, engine):
    client, csrf = await session_as("admin", "ada")
    form = base_form(csrf, action="save", step_count="31")
    for i in range(5, 31):
        form.update({f"s{i}.id": f"extra_{i}", f"s{i}.agent": "noop", f"s{i}.depends_on_text": f"fix, {'merge'}"})
    saved = await client.post("/playbooks/_new", data=form)
    assert saved.status_code == 303, saved.text
    [v1] = versions(engine, "triage")
    assert v1.definition["steps"][30]["depends_on"] == ["fix", "merge"]
    edit = await client.get("/playbooks/triage/edit")
    assert 'name="s30.depends_on_text" value="fix, merge"' in edit.text and 'name="s30.depends_on"' not in edit.text
    assert f'hx-headers=\'{{"X-CSRF-Token": "{csrf}"}}\'' in edit.text
    graph = await client.post(
        "/playbooks/_draft/graph",
        data={k: v for k, v in form.items() if k != "csrf_token"},
        headers={"X-CSRF-Token": csrf},
    )
    assert graph.status_code == 200 and graph.text.count('data-node="') == 31


async def test_a_large_playbook_saves_without_javascript(session_as, engine):
    """120 steps are ~1,700 form fields: more than a form parser's default 1,000, which would refuse the post (400)
    before the editor saw it."""
    client, csrf = await session_as("admin", "ada")
    form = base_form(csrf, id="big", message="many steps", action="save", step_count="120")
    template = {k[3:]: v for k, v in form.items() if k.startswith("s4.")}
    for i in range(5, 120):
        form.update({f"s{i}.{k}": v for k, v in template.items()})
        form.update(
            {f"s{i}.id": f"extra_{i}", f"s{i}.depends_on": [f"extra_{i - 1}" if i > 5 else "fix"], f"s{i}.when": ""}
        )
    assert sum(len(v) if isinstance(v, list) else 1 for v in form.values()) > 1500
    saved = await client.post("/playbooks/_new", data=form)
    assert saved.status_code == 303, saved.text[:500]
    assert [(v.version, len(v.definition["steps"]), v.message) for v in versions(engine, "big")] == [
        (1, 120, "many steps")
    ]


async def test_the_draft_is_previewed_under_the_form_and_nothing_is_saved(session_as, engine):
    client, csrf = await session_as("admin", "ada")
    form = base_form(csrf, action="preview")
    form["s0.instructions"] = "Check **{{service_name}}** in {{vars.region}}; {{nope}} and {{7*7}} stay as written"
    form["s4.when"] = 'incident.severity == "P1"'  # false for the sample incident (P3)
    answer = await client.post("/playbooks/_new", data=form)
    assert answer.status_code == 200, answer.text[:500]
    html = answer.text
    assert 'data-testid="preview"' in html and "nothing was saved" in html
    assert "Check <strong>sample-service</strong> in eu-1; {{nope}} and {{7*7}} stay as written" in html
    assert re.search(r'data-testid="unknown-check">[^<]*<code>nope</code>', html)
    assert re.search(r'id="preview-fix"[^>]*>\s*<h3>.*?skipped', html, re.S)
    assert ">Check **{{service_name}}** in {{vars.region}}" in html  # the form keeps what was typed
    assert versions(engine, "triage") == []

    form["s2.when"] = "steps.check.output.ok =="  # a condition that does not parse: shown at its field, no preview
    broken = await client.post("/playbooks/_new", data=form)
    assert broken.status_code == 422
    assert field_error(broken.text, "s2.when") and 'data-testid="preview"' not in broken.text
