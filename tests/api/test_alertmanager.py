"""A real Alertmanager (Debian's prometheus-alertmanager; `make install-test` installs it) posts its webhook to
the app served by uvicorn: a firing alert opens one incident, its resolution is recorded on the same one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from core.tables import Incident
from tests.api.alert_rows import alert_rows, event_kinds, incident_ids, tool_messages
from tests.factories import make_user
from tests.peers import free_port

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


@pytest.fixture
async def alertmanager(server: str, engine, tmp_path: Path) -> AsyncIterator[str]:
    """Alertmanager on a free port of 127.0.0.1, sending every group to the app within a second; yields its URL."""
    assert ALERTMANAGER.exists(), f"{ALERTMANAGER} is missing: `make install-test` installs prometheus-alertmanager"
    _, token = make_user(engine, "responder", username="alertmanager")
    config = {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "agent-monitor",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "agent-monitor",
                "webhook_configs": [
                    {
                        "url": f"{server}/api/alerts/alertmanager",
                        "send_resolved": True,
                        "http_config": {"authorization": {"credentials": token}},
                    }
                ],
            }
        ],
    }
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(json.dumps(config))  # YAML is a superset of JSON
    port = free_port()
    log = (tmp_path / "alertmanager.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(ALERTMANAGER),
        f"--config.file={config_file}",
        f"--storage.path={tmp_path / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=info",
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                if process.returncode is not None:
                    break
                try:
                    if (await client.get(f"{url}/-/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("Alertmanager did not become ready")
        assert process.returncode is None, (tmp_path / "alertmanager.log").read_text()
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def eventually(check: Callable[[], bool], what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s; Alertmanager said:\n{log.read_text()[-4000:]}")


async def test_alertmanager_opens_one_incident_and_records_its_resolution(alertmanager, engine, tmp_path):
    log = tmp_path / "alertmanager.log"
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "CheckoutErrors", "service": "checkout", "severity": "warning", "env": "test"},
        "annotations": {"summary": "checkout answers 500", "runbook_url": "https://runbooks.internal/checkout"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "generatorURL": "http://prometheus.internal:9090/graph",
    }
    async with httpx.AsyncClient(base_url=alertmanager) as client:
        pushed = await client.post("/api/v2/alerts", json=[alert])
        assert pushed.status_code == 200, pushed.text
        await eventually(lambda: len(alert_rows(engine)) == 1, "the firing notification", log)

        ended = datetime.now(UTC) - timedelta(seconds=1)
        resolved = await client.post("/api/v2/alerts", json=[{**alert, "endsAt": ended.isoformat()}])
        assert resolved.status_code == 200, resolved.text
        await eventually(lambda: alert_rows(engine)[0].status == "resolved", "the resolved notification", log)

    [incident_id] = incident_ids(engine)
    with Session(engine) as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        assert (incident.title, incident.service, incident.severity) == ("checkout answers 500", "checkout", "P3")
        assert incident.status == "open"  # a resolved alert does not resolve the incident by itself
    [row] = alert_rows(engine)
    assert row.incident_id == incident_id and row.source == "alertmanager"
    assert len(row.fingerprint) == 16 and row.receive_count >= 2
    assert row.ends_at is not None and abs((row.ends_at - ended).total_seconds()) < 1
    assert row.labels["alertname"] == "CheckoutErrors" and row.annotations["summary"] == "checkout answers 500"
    assert event_kinds(engine, incident_id) == ["alert.firing", "alert.resolved"]
    firing, resolution = tool_messages(engine, incident_id)
    assert firing.startswith("alert CheckoutErrors firing since") and "  env=test" in firing
    assert resolution.startswith("alert CheckoutErrors resolved at")
