"""Playbook preview, export and import through the API (issue 23): variables filled in from samples or a past
incident, unknown variables and unreachable steps flagged; JSON and YAML files that round-trip byte for byte;
imports that report every problem with its path and never save half a file; YAML object tags refused."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.api.incident_rows import insert_incident

YAML = {"Content-Type": "application/yaml"}
JSON = {"Content-Type": "application/json"}


def new_id() -> str:
    return f"pb-{uuid.uuid4().hex[:10]}"


def checkout(playbook_id: str, **extra: Any) -> dict[str, Any]:
    """check → (page, if P1 | restart, unless dry) → notify (first success of the two)."""
    steps = [
        {
            "id": "check",
            "agent": "noop",
            "instructions": "Check {{service_name}} ({{ incident.severity }}) in {{vars.region}}.\nThen report.",
            "params": {"summary": "{{incident.title}} in {{region}}", "tries": ["{{retries}}"]},
        },
        {"id": "page", "agent": "noop", "depends_on": ["check"], "when": 'incident.severity == "P1"'},
        {"id": "restart", "agent": "noop", "depends_on": ["check"], "when": "!vars.dry_run"},
        {
            "id": "notify",
            "agent": "noop",
            "depends_on": ["page", "restart"],
            "join": {"strategy": "first_success"},
            "impact": "tells #{{service_name}}",
        },
        {"id": "close", "agent": "noop", "depends_on": ["notify"]},
    ]
    variables = {
        "region": "eu-1",
        "retries": {"type": "integer", "default": 3, "description": "attempts"},
        "dry_run": {"type": "boolean", "default": False},
    }
    return {
        "id": playbook_id,
        "name": "Checkout: ünïcode ✓",
        "incident_type": playbook_id,
        "variables": variables,
        "steps": steps,
        **extra,
    }


async def store(api, body: dict[str, Any]) -> dict[str, Any]:
    answer = await api.post("/api/playbooks/import", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def export(api, path: str, **params: Any) -> str:
    answer = await api.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.text


async def test_preview_fills_in_variables_and_finds_the_steps_that_never_run(api, engine):
    pid = new_id()
    await store(api, checkout(pid))
    answer = await api.post(f"/api/playbooks/{pid}/preview", json={"variables": {"retries": "5"}})
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    steps = {s["id"]: s for s in preview["steps"]}
    assert steps["check"]["instructions"] == "Check sample-service (P3) in eu-1.\nThen report."
    assert steps["check"]["params"] == {"summary": "Sample incident in eu-1", "tries": ["5"]}
    assert preview["variables"] == {"region": "eu-1", "retries": 5, "dry_run": False}
    assert steps["page"]["outcome"] == "skipped" and 'incident.severity == "P1"' in steps["page"]["why"]
    assert steps["restart"]["outcome"] == "runs" and steps["notify"]["outcome"] == "runs"
    assert [u["step"] for u in preview["unreachable"]] == ["page"]
    assert preview["edges"] == [
        {"source": "check", "target": "page"},
        {"source": "check", "target": "restart"},
        {"source": "page", "target": "notify"},
        {"source": "restart", "target": "notify"},
        {"source": "notify", "target": "close"},
    ]
    assert [(n["id"], n["outcome"]) for n in preview["nodes"]][:2] == [("check", "runs"), ("page", "skipped")]

    # With dry_run on, both branches of the join are skipped: it fails, and what follows never runs.
    dry = (await api.post(f"/api/playbooks/{pid}/preview", json={"variables": {"dry_run": True}})).json()
    outcomes = {u["step"]: (u["outcome"], u["why"]) for u in dry["unreachable"]}
    assert set(outcomes) == {"page", "restart", "notify", "close"}
    assert outcomes["notify"][0] == "fails" and "first_success" in outcomes["notify"][1]
    assert outcomes["close"] == ("never", "waits on notify, which fails")

    # A past P1 incident: its service, severity and title are the context; the page step runs.
    incident_id = insert_incident(engine, title="cart 503", service="cart", severity="P1")
    past = (await api.post(f"/api/playbooks/{pid}/preview", json={"incident_id": incident_id})).json()
    steps = {s["id"]: s for s in past["steps"]}
    assert steps["check"]["instructions"].startswith("Check cart (P1) in eu-1.")
    assert steps["check"]["params"]["summary"] == "cart 503 in eu-1" and steps["notify"]["impact"] == "tells #cart"
    assert past["unreachable"] == [] and past["incident"]["incident_id"] == incident_id

    missing = await api.post(f"/api/playbooks/{pid}/preview", json={"incident_id": 999_999_999})
    assert missing.status_code == 404
    bad = await api.post(f"/api/playbooks/{pid}/preview", json={"variables": {"retries": "many"}})
    assert bad.status_code == 422 and "vars.retries: 'many' is not an integer" in bad.json()["detail"]
    unknown = await api.post(f"/api/playbooks/{pid}/preview", json={"variables": {"regoin": "x"}})
    assert unknown.status_code == 422 and "vars.regoin: not a variable" in unknown.json()["detail"]


async def test_a_draft_preview_flags_unknown_variables_and_leaves_injection_payloads_as_text(client_as):
    viewer = await client_as("viewer")
    draft = checkout(new_id())
    payloads = "{{7*7}} {{ ''.__class__.__mro__ }} {% for x in () %}{% endfor %} <script>alert(1)</script>"
    draft["steps"][0]["instructions"] = f"{{{{regoin}}}} {{{{config}}}} {payloads}"
    draft["steps"][1]["params"] = {"target": "{{ self }}"}
    answer = await viewer.post("/api/playbooks/preview", json={"playbook": draft})
    assert answer.status_code == 200, answer.text
    steps = {s["id"]: s for s in answer.json()["steps"]}
    assert steps["check"]["instructions"] == draft["steps"][0]["instructions"]  # left exactly as written
    assert steps["check"]["unknown_variables"] == ["regoin", "config"]
    assert steps["check"]["not_variables"] == [
        "{{7*7}}",
        "{{ ''.__class__.__mro__ }}",
        "{% for x in () %}",
        "{% endfor %}",
    ]
    assert steps["page"]["unknown_variables"] == ["self"] and steps["page"]["params"] == {"target": "{{ self }}"}
    # The same draft saved is refused, naming each place.
    refused = await viewer.post("/api/playbooks/preview", json={"playbook": draft | {"steps": []}})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "playbook.steps"
    assert (await viewer.post("/api/playbooks/import", json=draft)).status_code == 403  # viewers may not import


async def test_export_then_import_then_export_is_byte_identical(api):
    pid = new_id()
    await store(api, checkout(pid))
    for fmt in ("json", "yaml"):
        first = await export(api, f"/api/playbooks/{pid}/export", format=fmt)
        headers = YAML if fmt == "yaml" else JSON
        again = await api.post("/api/playbooks/import", content=first.encode(), headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["playbooks"][0]["status"] == "skipped"  # same id, version and definition
        assert await export(api, f"/api/playbooks/{pid}/export", format=fmt) == first
        # Under another id: stored as that id's version 1, and its export is the file, byte for byte.
        other = new_id()
        copied = first.replace(pid, other)
        created = await api.post("/api/playbooks/import", content=copied.encode(), headers=headers)
        assert created.json()["playbooks"] == [
            {"id": other, "version": 1, "status": "created", "saved_as": 1, "reason": "saved as version 1"}
        ]
        assert await export(api, f"/api/playbooks/{other}/export", format=fmt) == copied

    text = await export(api, f"/api/playbooks/{pid}/export", format="yaml")
    assert "instructions: |-\n    Check {{service_name}}" in text and "ünïcode ✓" in text  # readable YAML
    assert yaml.safe_load(text)["variables"]["retries"] == {"type": "integer", "default": 3, "description": "attempts"}
    answer = await api.get(f"/api/playbooks/{pid}/export", params={"format": "yaml"})
    assert answer.headers["content-type"].startswith("application/yaml")
    assert answer.headers["content-disposition"] == f'attachment; filename="{pid}-v1.yaml"'


async def test_a_bundle_round_trips_and_duplicates_resolve_by_id_and_version(api):
    a, b = new_id(), new_id()
    await store(api, {"playbooks": [checkout(a), checkout(b)]})
    bundle = await export(api, "/api/playbooks/export", format="yaml", id=[a, b])
    assert [p["id"] for p in yaml.safe_load(bundle)["playbooks"]] == [a, b]
    # The same bundle again: both skipped. One step changed in b: b gets version 2, a is skipped.
    changed = yaml.safe_load(bundle)
    changed["playbooks"][1]["steps"][0]["params"]["summary"] = "changed"
    answer = await api.post("/api/playbooks/import", content=yaml.safe_dump(changed).encode(), headers=YAML)
    assert answer.status_code == 200, answer.text
    assert [(p["id"], p["status"], p["saved_as"]) for p in answer.json()["playbooks"]] == [
        (a, "skipped", None),
        (b, "new_version", 2),
    ]
    assert "differs: saved as version 2" in answer.json()["playbooks"][1]["reason"]
    # A plain YAML list is a bundle too; the JSON bundle export of the same ids reads back the same.
    as_list = yaml.safe_dump(yaml.safe_load(bundle)["playbooks"], allow_unicode=True)
    same = await api.post("/api/playbooks/import", content=as_list.encode(), headers=YAML)
    assert [p["status"] for p in same.json()["playbooks"]] == ["skipped", "skipped"]  # a@1 and b@1 as stored
    as_json = await export(api, "/api/playbooks/export", format="json", id=[a])
    assert json.loads(as_json)["playbooks"][0]["id"] == a


async def test_an_import_reports_every_problem_with_its_path_and_saves_nothing(api):
    good, bad = new_id(), new_id()
    broken = checkout(bad)
    broken["steps"][1]["when"] = "incident.severity =="
    broken["steps"][2]["agent"] = "no_such_agent"
    broken["steps"][0]["params"]["summary"] = "{{regoin}}"
    broken["steps"][3]["depends_on"] = ["page", "nowhere"]
    typed = checkout(new_id())
    typed["variables"]["retries"]["default"] = "three"
    nameless = {k: v for k, v in checkout(new_id()).items() if k != "name"}
    answer = await api.post("/api/playbooks/import", json={"playbooks": [checkout(good), broken, typed, nameless]})
    assert answer.status_code == 422, answer.text
    fields = [(e["field"], e["message"]) for e in answer.json()["errors"]]
    assert fields == [
        ("playbooks[1].steps[1].when", "condition does not parse: incident.severity == ^"),
        ("playbooks[1].steps[3].depends_on", "depends on unknown step 'nowhere'"),
        ("playbooks[1].steps[0].params.summary", "unknown variable 'regoin'"),
        ("playbooks[1].steps[2].agent", "unknown agent 'no_such_agent'"),
        ("playbooks[2].variables.retries", "default 'three' is not an integer"),
        ("playbooks[3].name", "Field required"),
    ], fields
    assert answer.json()["detail"].startswith("6 problems: playbooks[1].steps[1].when")
    # The valid one was not saved either: nothing half-imported.
    assert (await api.get(f"/api/playbooks/{good}")).status_code == 404

    broken["steps"][1]["when"] = None
    broken["steps"][0]["params"]["summary"] = "ok"
    broken["steps"][3]["depends_on"] = ["page", "restart"]
    agent = await api.post("/api/playbooks/import", json={"playbooks": [checkout(good), broken]})
    assert [e["field"] for e in agent.json()["errors"]] == ["playbooks[1].steps[2].agent"]
    assert (await api.get(f"/api/playbooks/{good}")).status_code == 404
    twice = await api.post("/api/playbooks/import", json=[checkout(good), checkout(good)])
    assert twice.json()["errors"] == [
        {"field": "playbooks[1].version", "message": f"{good} version 1 is also playbooks[0]"}
    ]


async def test_yaml_object_tags_and_aliases_are_refused(api, tmp_path: Path):
    marker = tmp_path / "pwned"
    attacks = [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f"id: x\nname: !!python/object/apply:subprocess.check_output [[touch, {marker}]]\n",
        "!!python/object:builtins.dict {}",
        "!!python/name:os.system",
        'a: &a ["lol","lol"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n',
    ]
    for attack in attacks:
        answer = await api.post("/api/playbooks/import", content=attack.encode(), headers=YAML)
        assert answer.status_code == 422, (attack, answer.text)
        assert answer.json()["detail"].startswith("body: not valid YAML"), answer.text
    assert not marker.exists()
    broken = await api.post("/api/playbooks/import", content=b"{", headers=JSON)
    assert broken.status_code == 422 and broken.json()["detail"].startswith("body: not valid JSON")
    plain = await api.post("/api/playbooks/import", content=b"id: x", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    for deep in ("[" * 50_000 + "]" * 50_000, "a: " + "[" * 200 + "]" * 200):  # recursion, or just too deep
        nested = await api.post("/api/playbooks/import", content=deep.encode(), headers=YAML)
        assert nested.status_code == 422, nested.text
    draft = checkout(new_id())
    draft["steps"][0]["params"] = {"x": json.loads("[" * 100 + "]" * 100)}
    too_deep = await api.post("/api/playbooks/preview", json={"playbook": draft})
    assert too_deep.status_code == 422 and "nested deeper than 64 levels" in too_deep.json()["detail"]


async def test_an_import_over_the_size_limit_is_413(api):
    big = checkout(new_id(), description="x" * 9_000)
    body = json.dumps({"playbooks": [big] * 120})  # about 1.1 MB
    assert len(body) > 1_000_000
    answer = await api.post("/api/playbooks/import", content=body.encode(), headers=JSON)
    assert answer.status_code == 413, answer.text


async def test_a_new_playbook_may_not_take_the_id_of_a_route(api):
    """/api/playbooks/export, /import and /preview are routes: a playbook called so could never be read by id."""
    for reserved in ("export", "import", "preview"):
        answer = await api.post("/api/playbooks", json=checkout(reserved))
        assert answer.status_code == 422, answer.text
        assert f"'{reserved}' is reserved" in answer.text
    imported = await api.post("/api/playbooks/import", json=checkout("export"))
    assert imported.status_code == 422, imported.text
    assert "'export' is reserved" in str(imported.json()["errors"])
