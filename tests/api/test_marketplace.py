"""The agent marketplace through the API, on real parts: an index and wheels built in the test and served over
HTTP on 127.0.0.1, pip installing with --require-hashes into the test's PLUGIN_DIR, the real worker running the
installed agent in a playbook, Postgres keeping installs, counts and reviews."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from core.audit import AuditEvent
from core.catalogue import IndexSource
from core.marketplace import AgentPackage
from services.agent_install import agent_lock
from tests.api.market import Market, agent_wheel, sample_market, served
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, step
from worker.runner import incident_worker

pytestmark = pytest.mark.slow


def _broken(market: Market) -> None:
    broken = market.python_version("broken_agent", "1.0.0", module="raise RuntimeError('import fails')\n")
    market.add("broken_agent", [broken], capabilities=["remediation"])


@pytest.fixture
def market(tmp_path: Path, settings) -> Market:
    settings.plugin_dir = tmp_path / "plugins"
    return sample_market(
        tmp_path / "market",
        more=_broken,
        changelog_1_1="Reads inodes too",
        readme="# Disk probe\n<script>alert(1)</script>",
    )


@pytest.fixture
def index(market: Market, settings):
    with served(market) as url:
        settings.agent_indexes = [IndexSource(name="acme", source=url)]
        yield url


async def test_browse_filters_sorts_and_reports_bad_entries(index, client_as):
    viewer = await client_as("viewer", "vera")
    listed = (await viewer.get("/api/marketplace")).json()
    names = [a["name"] for a in listed["agents"]]
    assert names == ["broken_agent", "disk_probe", "pager_bridge", "shady_agent"]
    # The bad entry is left out and said, with where it is; the good ones are listed.
    assert {p["where"].split(" ")[0] for p in listed["problems"]} == {"agents[4]"}
    assert any("should match pattern" in p["message"] for p in listed["problems"])
    probe = next(a for a in listed["agents"] if a["name"] == "disk_probe")
    # The latest this product runs, not 9.0.0 (needs Agent Monitor >=99); nothing installed yet.
    assert probe["latest"] == "1.1.0" and probe["newest"] == "9.0.0" and probe["installed"] is None
    assert [a["name"] for a in (await viewer.get("/api/marketplace?kind=webhook")).json()["agents"]] == ["pager_bridge"]
    remediation = (await viewer.get("/api/marketplace?capability=remediation")).json()["agents"]
    assert [a["name"] for a in remediation] == ["broken_agent", "shady_agent"]
    assert [a["name"] for a in (await viewer.get("/api/marketplace?q=disk")).json()["agents"]] == ["disk_probe"]
    by_downloads = (await viewer.get("/api/marketplace?sort=downloads")).json()["agents"]
    assert [a["name"] for a in by_downloads][:2] == ["shady_agent", "disk_probe"]
    newest = (await viewer.get("/api/marketplace?sort=newest")).json()["agents"]
    assert newest[0]["name"] == "pager_bridge"
    assert (await viewer.get("/api/marketplace?sort=cheapest")).status_code == 422
    assert (await viewer.get("/api/marketplace?capability=juggling")).status_code == 422
    shown = (await viewer.get("/api/marketplace/disk_probe")).json()
    assert [v["version"] for v in shown["versions"]] == ["9.0.0", "1.1.0", "1.0.0"]
    assert "needs Agent Monitor >=99" in shown["versions"][0]["incompatible"]
    assert shown["readme"].startswith("# Disk probe")  # raw markdown: pages render it safely
    assert (await viewer.get("/api/marketplace/nope")).status_code == 404


async def test_install_checks_hashes_runs_the_agent_updates_and_removes(
    index, market, api, client_as, settings, engine, temporal_client
):
    responder = await client_as("responder", "rita")
    assert (await responder.post("/api/marketplace/disk_probe/install", json={})).status_code == 403

    # A wheel whose bytes are not the ones the index vouches for is refused before pip; nothing is recorded.
    refused = await api.post("/api/marketplace/shady_agent/install", json={})
    assert refused.status_code == 422, refused.text
    assert "sha256" in refused.json()["detail"]
    assert (await api.get("/api/marketplace/installed")).json() == []
    assert not (settings.effective_plugin_dir / "shady_agent").exists()
    # A package whose import fails is refused too (probed in its own process).
    broken = await api.post("/api/marketplace/broken_agent/install", json={})
    assert broken.status_code == 422 and "import fails" in broken.json()["detail"], broken.text
    # A version this product cannot run.
    future = await api.post("/api/marketplace/disk_probe/install", json={"version": "9.0.0"})
    assert future.status_code == 422 and ">=99" in future.json()["detail"]

    installed = await api.post("/api/marketplace/disk_probe/install", json={"version": "1.0.0"})
    assert installed.status_code == 201, installed.text
    body = installed.json()
    assert (body["version"], body["action"], body["workers_restart"]) == ("1.0.0", "install", True)
    again = await api.post("/api/marketplace/disk_probe/install", json={"version": "1.0.0"})
    assert again.status_code == 201 and again.json()["action"] == "unchanged"  # a repeat changes nothing
    agents = {a["name"]: a for a in (await api.get("/api/agents?capability=investigation")).json()}
    assert agents["disk_probe"]["version"] == "1.0.0" and agents["disk_probe"]["source"] == "plugin"
    assert "remediate_command" not in agents  # the capability filter
    card = next(a for a in (await api.get("/api/marketplace")).json()["agents"] if a["name"] == "disk_probe")
    assert card["installed"] == "1.0.0" and card["update_available"] is True

    # The installed agent runs in a playbook on the real worker.
    incident = await run_playbook(api, [step("probe", "disk_probe", params={"path": "/var"})])
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    assert state.steps[0].output["summary"] == "disk_probe 1.0.0 looked at /var"

    preview = (await api.get("/api/marketplace/disk_probe/update")).json()
    assert (preview["from"], preview["to"]) == ("1.0.0", "1.1.0")
    assert [c["version"] for c in preview["changelog"]] == ["1.1.0"]
    assert preview["changes"]["default_risk"] == {"before": "low", "after": "medium"}

    updated = await api.post("/api/marketplace/disk_probe/update", json={})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["version"], updated.json()["previous_version"]) == ("1.1.0", "1.0.0")
    assert "default_risk changed" in updated.json()["changed"]
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        incident = await run_playbook(api, [step("probe", "disk_probe", params={"path": "/srv"})])
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert state.steps[0].output["summary"] == "disk_probe 1.1.0 looked at /srv"

    shown = (await api.get("/api/marketplace/disk_probe")).json()
    assert shown["installs"] == {"1.0.0": 1, "1.1.0": 1}
    with Session(engine) as session:
        actions = session.exec(
            select(AuditEvent.action).where(AuditEvent.target_id == "disk_probe").order_by(col(AuditEvent.id))
        ).all()
        assert actions == ["agent.install", "agent.update"]
        assert session.exec(select(AgentPackage)).all()  # the exact bytes every worker installs

    # Removing an agent a playbook uses is refused; the playbooks are named.
    used = await api.delete("/api/marketplace/disk_probe")
    assert used.status_code == 409 and incident["incident_type"] in used.json()["detail"]


async def test_a_failed_update_leaves_the_previous_version_working(index, market, api, settings):
    assert (await api.post("/api/marketplace/disk_probe/install", json={"version": "1.0.0"})).status_code == 201
    versions = settings.effective_plugin_dir / "disk_probe"
    before = sorted(p.name for p in versions.iterdir())
    # The index now offers 1.2.0 whose wheel was swapped after the index was written (a tampered download).
    market.agents[0]["versions"].append(market.python_version("disk_probe", "1.2.0"))
    market.write()
    wheel = market.root / "wheels" / "acme_disk_probe-1.2.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    await api.get("/api/marketplace?refresh=true")
    failed = await api.post("/api/marketplace/disk_probe/update", json={"version": "1.2.0"})
    assert failed.status_code == 422 and "sha256" in failed.json()["detail"], failed.text
    (row,) = (await api.get("/api/marketplace/installed")).json()
    assert row["version"] == "1.0.0"
    assert sorted(p.name for p in versions.iterdir()) == before
    assert (await api.get("/api/agents/disk_probe")).json()["version"] == "1.0.0"


async def test_webhook_agents_install_from_the_index_and_keep_their_secret(index, api, settings):
    settings.outbound_allow_loopback = True
    installed = await api.post("/api/marketplace/pager_bridge/install", json={})
    assert installed.status_code == 201, installed.text
    assert (await api.post("/api/marketplace/disk_probe/update", json={})).status_code == 404  # not installed
    assert installed.json()["secret"].startswith("whsec_") and installed.json()["workers_restart"] is False
    (hook,) = (await api.get("/api/agents/webhooks")).json()
    assert (hook["name"], hook["version"], hook["url"]) == ("pager_bridge", "2.0.0", "http://127.0.0.1:9/agent")
    again = await api.post("/api/marketplace/pager_bridge/install", json={})
    assert "secret" not in again.json()  # shown once; kept
    assert (await api.delete("/api/marketplace/pager_bridge")).status_code == 204
    assert (await api.get("/api/agents/webhooks")).json() == []
    assert (await api.delete("/api/marketplace/pager_bridge")).status_code == 404


async def test_a_wheel_given_directly_is_checked_against_its_sha256(index, api, client_as, tmp_path):
    wheel = agent_wheel(tmp_path / "local", "local_probe", "0.1.0")
    data = wheel.read_bytes()
    url = f"/api/marketplace/wheels?filename={wheel.name}"
    viewer = await client_as("viewer", "vic")
    assert (await viewer.post(url, content=data)).status_code == 403
    wrong = await api.post(f"{url}&sha256={'0' * 64}", content=data)
    assert wrong.status_code == 422 and "sha256" in wrong.json()["detail"]
    assert (await api.post(url, content=b"not a zip")).status_code == 422
    done = await api.post(f"{url}&sha256={hashlib.sha256(data).hexdigest()}", content=data)
    assert done.status_code == 201, done.text
    assert done.json()["name"] == "local_probe"
    assert (await api.get("/api/agents/local_probe")).json()["source"] == "plugin"
    assert (await api.delete("/api/marketplace/local_probe")).status_code == 204
    assert (await api.get("/api/agents/local_probe")).status_code == 404


async def test_reviews_one_per_user_average_and_admin_hiding(index, api, client_as, engine):
    vera = await client_as("viewer", "vera")
    rita = await client_as("responder", "rita")
    assert (await vera.put("/api/marketplace/disk_probe/review", json={"rating": 2, "body": "meh"})).status_code == 200
    edited = await vera.put("/api/marketplace/disk_probe/review", json={"rating": 4, "body": "<b>good</b> now"})
    assert edited.status_code == 200
    assert (await rita.put("/api/marketplace/disk_probe/review", json={"rating": 5})).status_code == 200
    shown = (await vera.get("/api/marketplace/disk_probe")).json()
    assert (shown["rating"], shown["ratings"]) == (4.5, 2)  # one review per user: vera's edit replaced hers
    assert {r["username"]: r["rating"] for r in shown["reviews"]} == {"vera": 4, "rita": 5}
    assert (await vera.put("/api/marketplace/disk_probe/review", json={"rating": 6})).status_code == 422
    assert (await vera.put("/api/marketplace/nope/review", json={"rating": 3})).status_code == 404

    review_id = next(r["id"] for r in shown["reviews"] if r["username"] == "rita")
    assert (await vera.post(f"/api/marketplace/reviews/{review_id}/hide", json={"reason": "x"})).status_code == 403
    assert (await api.post(f"/api/marketplace/reviews/{review_id}/hide", json={})).status_code == 422  # say why
    hidden = await api.post(f"/api/marketplace/reviews/{review_id}/hide", json={"reason": "spam"})
    assert hidden.status_code == 200 and hidden.json()["hidden"] is True
    seen = (await vera.get("/api/marketplace/disk_probe")).json()
    assert (seen["rating"], seen["ratings"]) == (4.0, 1) and [r["username"] for r in seen["reviews"]] == ["vera"]
    as_admin = (await api.get("/api/marketplace/disk_probe")).json()
    assert {r["username"]: r["hidden"] for r in as_admin["reviews"]} == {"vera": False, "rita": True}
    with Session(engine) as session:
        hide = session.exec(select(AuditEvent).where(AuditEvent.action == "agent.review.hide")).one()
        assert hide.after == {"agent": "disk_probe", "reason": "spam"}
    assert (await vera.delete("/api/marketplace/disk_probe/review")).status_code == 204
    assert (await vera.delete("/api/marketplace/disk_probe/review")).status_code == 404


async def test_an_unreachable_or_broken_index_is_reported_and_the_others_still_load(index, api, settings, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    settings.agent_indexes = [
        *settings.agent_indexes,
        IndexSource(name="gone", source="http://127.0.0.1:9/index.json"),
        IndexSource(name="junk", source=str(junk)),
    ]
    listed = await api.get("/api/marketplace")
    assert listed.status_code == 200
    body = listed.json()
    assert "disk_probe" in [a["name"] for a in body["agents"]]
    errors = {i["name"]: i["error"] for i in body["indexes"]}
    assert errors["acme"] == "" and errors["gone"] and errors["junk"]


async def test_one_install_of_an_agent_at_a_time(index, api, engine):
    """While another web process holds the agent's install lock, a second install is a 409, not a race."""
    with agent_lock(engine, "disk_probe"):
        busy = await api.post("/api/marketplace/disk_probe/install", json={})
        assert busy.status_code == 409 and "right now" in busy.json()["detail"], busy.text
    assert (await api.post("/api/marketplace/disk_probe/install", json={})).status_code == 201
