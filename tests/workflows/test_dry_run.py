"""A playbook's true dry run (issue 23): a real PlaybookDryRunWorkflow on the real worker reads a real log file,
says what a command, a webhook and a restart would do without doing any of it (the command's marker file stays
absent, the webhook receiver gets nothing), previews approvals by the real policies, honours `when`, and writes
nothing but its own row: every other table keeps its row count."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import text
from sqlmodel import Session
from temporalio.worker import Replayer

from core.approvals import ApprovalPolicy
from core.commands import CommandRule
from core.converter import DATA_CONVERTER
from core.dry_run import DRY_RUN_WORKFLOW
from tests.activities.test_remediate_command import script
from tests.activities.test_remediate_webhook import SECRET
from tests.factories import create_incident, wait_for_workflow
from tests.peers import serving
from workflows.incident import IncidentWorkflow, PlaybookDryRunWorkflow

# Tables a dry run may write: its own row, the live event its page listens to, the audit row of who started it.
WRITTEN = {"playbook_dry_runs", "events", "audit_events"}


def iso(minutes_ago: float) -> str:
    when = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[str]]]:
    """A real deploy endpoint on 127.0.0.1 that counts every request it gets."""
    received: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            with lock:
                received.append(f"{self.command} {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = _any  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as base:
        yield f"{base}/deploy", received


def row_counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        tables = session.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        ).scalars()
        return {t: session.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in sorted(tables)}  # noqa: S608


def playbook(log: Path, restart: list[str], rollback: list[str], deploy_url: str) -> dict[str, Any]:
    return {
        "id": "checkout-fix",
        "name": "Checkout fix",
        "incident_type": "checkout-down",
        "variables": {"region": "eu-1"},
        "approvers": {"teams": ["sre"]},  # who may approve its steps that name nobody themselves
        "steps": [
            {"id": "logs", "agent": "investigate_logs", "params": {"paths": [str(log)], "window_minutes": 60},
             "instructions": "read ${incident.service}'s logs in ${region}"},
            {"id": "restart", "agent": "remediate_command", "depends_on": ["logs"], "params": {"argv": restart},
             "when": "steps.logs.output.data.restart_helps == true", "instructions": "restart ${incident.service}"},
            {"id": "rollback", "agent": "remediate_command", "depends_on": ["logs"], "params": {"argv": rollback},
             "when": "steps.logs.output.data.restart_helps == false"},
            {"id": "deploy", "agent": "remediate_webhook", "depends_on": ["logs"],
             "params": {"url": deploy_url, "payload": {"region": "${region}"}}, "approvers": {"users": ["dora"]}},
            {"id": "summary", "agent": "llm", "depends_on": ["restart", "deploy"],
             "instructions": "summarise what was done in ${region}"},
        ],
    }  # fmt: skip


async def wait_for_dry_run(client, dry_run_id: int) -> dict[str, Any]:
    for _ in range(600):
        found = (await client.get(f"/api/dry-runs/{dry_run_id}")).json()
        if found["ended"]:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"dry run {dry_run_id} did not end: {found}")


async def test_a_dry_run_reads_for_real_and_changes_nothing(
    api, client_as, engine, settings, temporal_client, worker, tmp_path: Path
):
    log = tmp_path / "logs" / "checkout.log"
    log.parent.mkdir()
    log.write_text(
        f"{iso(12)} ERROR [db] connection pool exhausted (size=20)\n{iso(5)} ERROR [db] connection pool exhausted "
        "(size=20)\n"
    )
    settings.log_roots = [log.parent]
    marker = tmp_path / "restarted"
    restart = [script(tmp_path, "restart.sh", 'echo restarted >> "$1"\n'), str(marker), "us-2"]
    rollback = [script(tmp_path, "rollback.sh", 'echo rolled back >> "$1"\n'), str(marker)]
    settings.command_allowlist = [CommandRule(argv=restart), CommandRule(argv=rollback)]
    settings.remediation_webhook_secret = SecretStr(SECRET)  # a real run would sign and send it
    with Session(engine) as session:
        session.add(ApprovalPolicy(name="deploys", agent="remediate_webhook", max_risk="high", auto_approve=True,
                                   created_by="root"))  # fmt: skip
        session.commit()
    responder = await client_as("responder", "rita")
    with webhook_receiver() as (deploy_url, received):
        restart_templated = [*restart[:2], "${region}"]
        stored = await api.post("/api/playbooks", json=playbook(log, restart_templated, rollback, deploy_url))
        assert stored.status_code == 201, stored.text
        before = row_counts(engine)

        started = await responder.post(
            "/api/playbooks/checkout-fix/dry-runs",
            json={"variables": {"region": "us-2"}, "sample": {"service": "checkout", "title": "checkout is down"}},
        )
        assert started.status_code == 202, started.text
        dry = started.json()
        assert dry["url"] == f"/dry-runs/{dry['id']}" and dry["workflow_id"] == f"dry-run-{dry['id']}"
        done = await wait_for_dry_run(responder, dry["id"])
        await asyncio.sleep(0.5)  # anything a stray activity would still send arrives by now
        assert received == []  # the webhook receiver got nothing
    assert not marker.exists()  # the command never started
    after = row_counts(engine)
    changed = {t: (before[t], after[t]) for t in before if before[t] != after[t]}
    assert set(changed) <= WRITTEN, changed
    assert changed["playbook_dry_runs"] == (0, 1)

    assert done["status"] == "completed", done["report"]
    report = {s["step_id"]: s for s in done["report"]["steps"]}
    logs = report["logs"]
    assert logs["outcome"] == "ran_read_only" and logs["instructions"] == "read checkout's logs in us-2"
    state_logs = next(s for s in done["state"]["steps"] if s["step_id"] == "logs")
    assert state_logs["output"]["data"]["error_count"] == 2  # the file was really read
    assert report["restart"]["outcome"] == "would_run"
    assert report["restart"]["text"].startswith(f'would run argv ["{restart[0]}", "{marker}", "us-2"]')
    assert "(allowlisted: yes)" in report["restart"]["text"]
    assert report["restart"]["params"]["argv"] == restart
    assert report["restart"]["approval"] == (  # the playbook's approvers, as a real run would ask them
        "would ask team sre (risk high, timeout 3600s); the dry run continued as if approved"
    )
    assert report["rollback"]["outcome"] == "skipped"
    assert report["rollback"]["text"] == "condition is false: steps.logs.output.data.restart_helps == false"
    assert report["deploy"]["outcome"] == "would_run"
    assert report["deploy"]["text"] == f"would POST to {deploy_url} with a JSON payload (region) (signed)"
    assert report["deploy"]["approval"].startswith("would auto-approve by policy deploys (risk high")
    assert report["summary"]["text"].startswith("would ask the LLM (")
    assert report["summary"]["text"].endswith("summarise what was done in us-2")
    assert done["report"]["summary"] == {
        "ran_read_only": 1, "would_run": 3, "skipped": 1, "would_ask": 1, "would_auto_approve": 1,
    }  # fmt: skip

    handle = temporal_client.get_workflow_handle(dry["workflow_id"])
    described = await handle.describe()
    assert described.workflow_type == DRY_RUN_WORKFLOW
    attributes = {pair.key.name: pair.value for pair in described.typed_search_attributes}
    assert attributes.get("PlaybookId") == "checkout-fix" and "IncidentId" not in attributes
    # Its own history replays on the workflow code (deterministic, like the incidents' in test_replay.py).
    replayer = Replayer(workflows=[IncidentWorkflow, PlaybookDryRunWorkflow], data_converter=DATA_CONVERTER)
    await replayer.replay_workflow(await handle.fetch_history())


async def test_a_dry_run_of_a_past_incident_leaves_it_as_it_was(api, engine, settings, temporal_client, worker):
    incident = await create_incident(api, service="billing", title="billing is slow")
    await wait_for_workflow(temporal_client, incident["workflow_id"])
    before_incident = (await api.get(f"/api/incidents/{incident['id']}")).json()
    before = row_counts(engine)
    started = await api.post("/api/playbooks/default/dry-runs", json={"incident_id": incident["id"]})
    assert started.status_code == 202, started.text
    done = await wait_for_dry_run(api, started.json()["id"])
    assert done["incident"]["incident_id"] == incident["id"] and done["source"] == f"incident #{incident['id']}"
    assert {s["step_id"] for s in done["report"]["steps"]} == {"monitor", "investigate", "remediate", "verify"}
    after = row_counts(engine)
    assert {t for t in before if before[t] != after[t]} <= WRITTEN
    assert (await api.get(f"/api/incidents/{incident['id']}")).json() == before_incident
