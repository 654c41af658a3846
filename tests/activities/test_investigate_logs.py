"""investigate_logs on real files in tmp_path and a local server speaking Loki's JSON, then in a real run."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps
from activities.logs import InvestigateLogsAgent
from core.conversations import ConversationMessage
from core.payloads import AgentInput, AgentResult, IncidentContext
from core.settings import Settings
from core.tables import AgentRun, WorkflowStep
from tests.factories import wait_for_workflow
from tests.peers import serving
from tests.secret_shapes import LogLine, log_lines, shown
from tests.workflows.test_engine import run_playbook, step
from worker.runner import incident_worker

NOW = datetime.now(UTC)


def iso(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local(minutes_ago: float) -> datetime:
    return (NOW - timedelta(minutes=minutes_ago)).astimezone()


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


async def investigate(roots: list[Path], context: dict[str, Any] | None = None, **params: Any) -> AgentResult:
    settings = Settings(_env_file=None, log_roots=roots)  # type: ignore[call-arg]
    async with httpx.AsyncClient() as http:
        agent = InvestigateLogsAgent(AgentDeps(http=http, settings=settings))
        return await agent.run(
            AgentInput(
                incident=IncidentContext(incident_id=1, title="checkout errors", service="checkout", severity="P2"),
                workflow_id="incident-1",
                step_id="logs",
                params=params,
                context=context,
            )
        )


def test_the_spec_refuses_bad_params():
    spec = InvestigateLogsAgent.spec
    assert spec.params_problem({}) is None  # the registered service's log_paths then
    assert "loki_query" in str(spec.params_problem({"loki_url": "http://loki:3100"}))
    assert spec.params_problem({"paths": []}) == "params.paths: [] should be non-empty"
    assert spec.params_problem({"paths": ["a"], "patterns": ["x" * 501]}).startswith("params.patterns.0:")
    assert spec.params_problem({"paths": ["a"], "window_minutes": 0}).startswith("params.window_minutes:")
    assert spec.params_problem({"loki_url": "http://loki:3100", "loki_query": '{app="checkout"}'}) is None


async def test_counts_the_errors_in_the_window_grouped_with_a_traceback_as_one_entry(tmp_path):
    write(
        tmp_path / "checkout.log",
        f"{iso(120)} ERROR [disk] disk full on /var/lib/pg",  # before the window
        f"{iso(119)} ERROR [worker] crashed",
        "Traceback (most recent call last):",  # untimed: two hours old, like the line it belongs to
        "TimeoutError: old news",
        f"{iso(20)} INFO [http] GET /cart 200",
        f"{iso(12)} ERROR [db] connection pool exhausted (size=20) request=8812",
        f"{iso(11)} ERROR [db] connection pool exhausted (size=20) request=8813",
        f"{iso(10)} ERROR [api] order handler failed for 6f1c2b9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "Traceback (most recent call last):",
        '  File "/app/orders.py", line 42, in create',
        "    raise ValueError(f'bad order {order_id}')",
        "ValueError: bad order 991",
        f"{iso(5)} ERROR [db] connection pool exhausted (size=20) request=8820",
        f"{iso(1)} INFO [http] GET /cart 200",
    )
    result = await investigate([tmp_path], paths=[str(tmp_path / "checkout.log")])
    assert result.ok is False and result.resolved is None
    assert result.data["error_count"] == 4
    (file,) = result.data["files"]
    assert file["path"] == str(tmp_path / "checkout.log") and file["errors"] == 4
    assert file["lines_in_window"] == 10  # the traceback's lines count with their entry
    pool, crash = result.data["top"]
    assert pool["line"] == "ERROR [db] connection pool exhausted (size=<n>) request=<n>" and pool["count"] == 3
    seen = datetime.fromisoformat(pool["first_seen"]), datetime.fromisoformat(pool["last_seen"])
    assert seen == (datetime.fromisoformat(iso(12)), datetime.fromisoformat(iso(5)))
    assert "request=8812" in pool["example"]
    assert crash["line"] == "ERROR [api] order handler failed for <uuid> … ValueError: bad order <n>"
    assert crash["count"] == 1 and 'File "/app/orders.py"' in crash["example"]
    assert result.summary == (
        "checkout.log: 4 errors in the last 30 min; top: ERROR [db] connection pool exhausted (size=<n>) "
        "request=<n> (3×)"
    )
    assert [f["title"] for f in result.findings] == [
        "3× ERROR [db] connection pool exhausted (size=<n>) request=<n>",
        "1× ERROR [api] order handler failed for <uuid> … ValueError: bad order <n>",
    ]
    (message,) = result.messages
    assert message["role"] == "tool" and "3× ERROR [db] connection pool exhausted" in message["content"]
    assert "disk full" not in json.dumps(result.data)


async def test_reads_syslog_local_time_access_and_json_logs(tmp_path):
    then, old = local(3), local(90)
    write(
        tmp_path / "syslog",
        f"{old:%b} {old.day:2d} {old:%H:%M:%S} web1 kernel: FATAL out of memory",
        f"{then:%b} {then.day:2d} {then:%H:%M:%S} web1 checkout[4242]: connection refused by payments:443",
    )
    write(
        tmp_path / "app.log",  # Python logging's default: local time, no zone, a comma before the milliseconds
        f"{old:%Y-%m-%d %H:%M:%S},120 CRITICAL stale",
        f"{then:%Y-%m-%d %H:%M:%S},120 CRITICAL payment provider timed out after 30s",
    )
    clf = "%d/%b/%Y:%H:%M:%S %z"
    write(
        tmp_path / "access.log",
        f'10.0.0.7 - - [{local(2):{clf}}] "GET /checkout HTTP/1.1" 503 12 "-" "curl/8"',
        f'10.0.0.8 - - [{local(2):{clf}}] "GET /checkout HTTP/1.1" 503 12 "-" "curl/8"',
        f'10.0.0.9 - - [{local(2):{clf}}] "GET /cart HTTP/1.1" 200 512 "-" "curl/8"',
        f'10.0.0.9 - - [{local(95):{clf}}] "GET /cart HTTP/1.1" 500 512 "-" "curl/8"',
    )
    write(
        tmp_path / "events.jsonl",
        json.dumps({"time": iso(4), "level": "error", "msg": "ledger write failed"}),
        json.dumps({"time": iso(4), "level": "info", "msg": "ledger write ok"}),
    )
    result = await investigate([tmp_path], paths=["*"], window_minutes=60)
    top = {group["line"]: group["count"] for group in result.data["top"]}
    assert top == {
        "web1 checkout[<n>]: connection refused by payments:<n>": 1,
        "CRITICAL payment provider timed out after <n>s": 1,
        '<ip> - - [<ts>] "GET /checkout HTTP/<n>" 503 <n> "-" "curl/<n>"': 2,
        '{"time": "<ts>", "level": "error", "msg": "ledger write failed"}': 1,
    }
    assert {f["path"]: f["timestamps"] for f in result.data["files"]} == {
        str(tmp_path / name): True for name in ("access.log", "app.log", "events.jsonl", "syslog")
    }


async def test_rotated_files_by_glob_and_clean_logs(tmp_path):
    logs = tmp_path / "logs"
    write(logs / "app.log", f"{iso(2)} INFO all good", f"{iso(1)} INFO still good")
    write(logs / "app.log.1", f"{iso(25)} ERROR before the rotation")
    old = write(logs / "app.log.2", f"{iso(600)} ERROR ten hours ago")
    os.utime(old, (time.time() - 36_000, time.time() - 36_000))
    write(logs / "app.log.3.gz", f"{iso(3)} ERROR never read: compressed")
    write(logs / "other.log", f"{iso(3)} ERROR another service")

    rotated = await investigate([logs], paths=["app.log*"])
    assert rotated.ok is False and rotated.data["error_count"] == 1
    assert rotated.data["top"][0]["line"] == "ERROR before the rotation"
    assert rotated.summary.startswith("app.log, app.log.1: 1 error in the last 30 min; top: ERROR before the rotation")
    skipped = {Path(f["path"]).name: f.get("skipped") for f in rotated.data["files"]}
    assert skipped == {
        "app.log": None,
        "app.log.1": None,
        "app.log.2": "not written to in the window",
        "app.log.3.gz": "compressed (an older rotation): not read",
    }

    clean = await investigate([logs], paths=[str(logs / "app.log")])
    assert clean.ok is True and clean.resolved is True and clean.findings == [] and clean.messages == []
    assert clean.summary == "app.log: no errors in the last 30 min (2 lines in the window)"


async def test_paths_outside_the_log_roots_are_refused_and_never_read(tmp_path):
    logs = tmp_path / "logs"
    write(logs / "app.log", f"{iso(1)} INFO fine")
    secret = write(tmp_path / "secret.log", f"{iso(1)} ERROR secret-marker must not be read")
    (logs / "link.log").symlink_to(secret)
    (logs / "dir.log").mkdir()
    paths = [str(secret), str(logs / "link.log"), "../secret.log", str(tmp_path / "*.log"), str(logs / "dir.log")]

    refused = await investigate([logs], paths=[*paths, "missing.log"])
    assert refused.ok is False and refused.resolved is None
    assert "secret-marker" not in json.dumps([refused.summary, refused.data, refused.findings, refused.messages])
    reasons = {p["path"]: p["reason"] for p in refused.data["not_read"]}
    assert reasons == {
        str(secret): "is outside the log roots: refused, not read",
        str(logs / "link.log"): f"resolves to {secret}, which is outside the log roots: refused, not read",
        str(logs / "../secret.log"): f"resolves to {secret}, which is outside the log roots: refused, not read",
        str(tmp_path / "*.log"): "is outside the log roots: refused, not read",
        str(logs / "dir.log"): "is not a regular file",
        "missing.log": "does not exist",
    }
    assert refused.summary.startswith(f"nothing read: {secret} is outside the log roots: refused, not read")
    assert {f["severity"] for f in refused.findings} == {"warning"}

    # The readable file is read; the refusal is reported beside it, and clean logs do not settle it then.
    mixed = await investigate([logs], paths=[str(logs / "app.log"), str(logs / "link.log")])
    assert mixed.ok is True and mixed.resolved is None
    assert mixed.summary == "app.log: no errors in the last 30 min (1 line in the window); 1 path not read"
    assert "secret-marker" not in json.dumps(mixed.data)


async def test_a_big_file_is_read_from_its_tail_only(tmp_path):
    path = tmp_path / "big.log"
    filler = "".join(f"{iso(2)} INFO [http] GET /item/{n} 200 served in 3 ms\n" for n in range(20_000))
    with path.open("w") as file:
        file.write(f"{iso(3)} ERROR head-marker in the first line\n")
        while file.tell() < 50 * 2**20:
            file.write(filler)
        file.write(f"{iso(1)} ERROR tail-marker in the last line\n")
    started = time.monotonic()
    result = await investigate([tmp_path], paths=[str(path)])
    assert time.monotonic() - started < 15  # loose: it reads 5 MB of 50, not the whole file
    (file,) = result.data["files"]
    assert file["size"] >= 50 * 2**20 and file["truncated"] is True
    assert 5 * 2**20 - 200 < file["read_bytes"] <= 5 * 2**20
    assert [g["line"] for g in result.data["top"]] == ["ERROR tail-marker in the last line"]


async def test_custom_patterns_and_unusable_ones(tmp_path):
    write(tmp_path / "q.log", f"{iso(2)} WARN queue checkout-7 stalled", f"{iso(1)} ERROR not asked for")
    result = await investigate([tmp_path], paths=["q.log"], patterns=[r"checkout-\d+ stalled"], max_lines=1)
    assert result.data["error_count"] == 1 and result.data["top"][0]["line"] == "WARN queue checkout-<n> stalled"
    for pattern, problem in [("(unclosed", "does not compile"), ("(a+)+$", "can backtrack without end")]:
        with pytest.raises(ApplicationError) as raised:
            await investigate([tmp_path], paths=["q.log"], patterns=["ok", pattern])
        assert raised.value.non_retryable and raised.value.type == "InvalidParams"
        message = raised.value.message
        assert message.startswith("investigate_logs: params.patterns.1:") and problem in message


class Loki(BaseHTTPRequestHandler):
    """A Loki query_range endpoint: answers `answer` and records each request."""

    requests: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200
    answer: ClassVar[dict[str, Any]] = {}
    error: ClassVar[str] = "parse error at line 1"

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        Loki.requests.append({"path": url.path, "query": parse_qs(url.query), "tenant": self.headers["X-Scope-OrgID"]})
        body = json.dumps(Loki.answer if Loki.status == 200 else {"message": Loki.error}).encode()
        self.send_response(Loki.status)
        self.send_header("Content-Type", "application/json" if Loki.status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def ns(minutes_ago: float) -> str:
    return str(int((NOW - timedelta(minutes=minutes_ago)).timestamp() * 1e9))


async def test_loki_lines_are_scanned_like_file_lines(tmp_path):
    Loki.requests, Loki.status = [], 200
    Loki.answer = {
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": [
                {
                    "stream": {"app": "checkout", "pod": "checkout-1"},
                    "values": [[ns(1), 'level=error msg="payments answered 502" status=502'], [ns(3), "ok"]],
                },
                {
                    "stream": {"app": "checkout", "pod": "checkout-2"},
                    "values": [[ns(2), 'level=error msg="payments answered 502" status=502']],
                },
            ],
        },
    }
    with serving(Loki) as base:
        result = await investigate(
            [tmp_path], loki_url=base, loki_query='{app="checkout"}', loki_tenant="shop", window_minutes=15
        )
        (request,) = Loki.requests
        assert request["path"] == "/loki/api/v1/query_range" and request["tenant"] == "shop"
        query = {key: value[0] for key, value in request["query"].items()}
        assert query["query"] == '{app="checkout"}' and query["direction"] == "backward" and query["limit"] == "1000"
        assert int(query["end"]) - int(query["start"]) == pytest.approx(15 * 60 * 1e9, rel=1e-6)
        assert result.ok is False and result.data["error_count"] == 2
        (group,) = result.data["top"]
        assert group["line"] == 'level=error msg="payments answered <n>" status=502' and group["count"] == 2
        assert result.data["loki"]["lines_in_window"] == 3 and result.data["loki"]["streams"] == 2
        assert result.summary.startswith("loki: 2 errors in the last 15 min; top: level=error")

        Loki.status = 400  # a bad LogQL query: retrying cannot help
        with pytest.raises(ApplicationError) as raised:
            await investigate([tmp_path], loki_url=base, loki_query="{app=")
        assert raised.value.non_retryable and "HTTP 400" in str(raised.value)
        Loki.status = 503  # Loki itself is unwell: transient, Temporal retries
        with pytest.raises(ApplicationError) as unavailable:
            await investigate([tmp_path], loki_url=base, loki_query='{app="checkout"}')
        assert not unavailable.value.non_retryable and "Loki at 127.0.0.1 is unavailable (HTTP 503" in str(
            unavailable.value
        )


def checkout_service(log: Path) -> type[BaseHTTPRequestHandler]:
    """A service that fails every request and logs why, as a real one would."""

    class Checkout(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            with log.open("a") as file:
                file.write(f"{datetime.now(UTC).isoformat()} INFO GET {self.path}\n")
                file.write(f"{datetime.now(UTC).isoformat()} ERROR [db] connection pool exhausted (size=20)\n")
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Checkout


async def test_a_playbook_step_names_the_top_error_of_the_services_log(
    api, temporal_client, engine, settings, tmp_path
):
    logs = tmp_path / "logs"
    logs.mkdir()
    settings.log_roots = [logs]
    with serving(checkout_service(logs / "checkout.log")) as base:
        async with httpx.AsyncClient() as http:
            for n in range(7):
                assert (await http.get(f"{base}/checkout/{n}")).status_code == 500
    incident = await run_playbook(api, [step("logs", "investigate_logs", params={"paths": ["checkout.log"]})])
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"  # a negative finding informs; it fails the step only with fail_on_negative
    (logs_step,) = state.steps
    assert logs_step.status == "completed"
    output = logs_step.output
    assert output["ok"] is False
    assert output["summary"] == (
        "checkout.log: 7 errors in the last 30 min; top: ERROR [db] connection pool exhausted (size=<n>) (7×)"
    )
    assert output["data"]["top"][0]["count"] == 7 and output["messages"] == []
    with Session(engine) as session:
        (run,) = session.exec(select(AgentRun).where(AgentRun.workflow_id == incident["workflow_id"])).all()
        stored = session.exec(select(WorkflowStep).where(WorkflowStep.workflow_id == incident["workflow_id"])).one()
        said = session.exec(
            select(ConversationMessage)
            .where(
                ConversationMessage.workflow_id == incident["workflow_id"],
                ConversationMessage.agent == "investigate_logs",
            )
            .order_by(col(ConversationMessage.id))
        ).all()
    assert (run.agent, run.status) == ("investigate_logs", "succeeded")
    assert stored.status == "completed" and stored.output["summary"] == output["summary"]
    assert [(m.role, m.agent) for m in said] == [("tool", "investigate_logs"), ("assistant", "investigate_logs")]
    assert said[0].content.startswith("Top error lines, checkout.log, last 30 min:\n7× ERROR [db] connection pool")


async def test_bad_params_are_422_naming_the_step_and_field(api):
    for params, field in [({"paths": []}, "params.paths"), ({"paths": ["a"], "tail_bytes": 1}, "params.tail_bytes")]:
        body = {"id": "bad-logs", "name": "bad", "steps": [step("logs", "investigate_logs", params=params)]}
        response = await api.post("/api/playbooks", json=body)
        assert response.status_code == 422
        assert f"step logs: {field}:" in response.json()["detail"]


async def test_without_paths_it_reads_the_registered_services_log_paths(tmp_path):
    log = tmp_path / "checkout.log"
    log.write_text(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}Z ERROR payment gateway timed out\n")
    service = {"name": "checkout", "log_paths": [str(log)]}
    result = await investigate([tmp_path], context={"service": service})
    assert not result.ok and "payment gateway timed out" in result.summary
    nothing = await investigate([tmp_path], context={"service": {"name": "checkout", "log_paths": []}})
    assert not nothing.ok and nothing.summary.startswith("no logs to read: give params.paths")


# Issue 19, finding 7: numbers were masked before secrets were, so `ghp_1234…` was shown as `ghp_<n>abcd…` (35 of
# its 36 characters) and every Slack `xoxb-<digits>-<digits>-secret` kept its secret part.
GITHUB_TOKENS = ("ghp_1234abcdEFGHijklMNOPqrstUVWXyz5678AB", "ghp_9876zyxwVUTSrqpoNMLKjihgFEDCba4321ZY")
SLACK_TOKEN = "xoxb-123-456-secret"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----",
    "MIIEowIBAAKCAQEAxr8pQ2ZmZ3JrZXlib2R5",
    "-----END RSA PRIVATE KEY-----",
)
SECRETS = (*(token[4:] for token in GITHUB_TOKENS), SLACK_TOKEN[5:], PRIVATE_KEY[1], "hunter2hunter2")


def secret_log(path: Path) -> Path:
    return write(
        path,
        f"{iso(4)} ERROR auth failed for {GITHUB_TOKENS[0]}",
        f"{iso(3)} ERROR auth failed for {GITHUB_TOKENS[1]}",
        f"{iso(2)} ERROR slack post failed: token {SLACK_TOKEN} rejected",
        f"{iso(1)} ERROR tls setup failed, key follows:",
        *PRIVATE_KEY,  # untimed: lines of the entry above
        f"{iso(1)} ERROR cannot connect to postgres://app:hunter2hunter2@db:5432/main",
    )


def assert_no_secret(where: str, text: str, tmp_path: Path) -> None:
    """No 5 characters in a row of a secret (the test's directory names the test: "…_secret…")."""
    for secret in SECRETS:
        found = shown(secret, text, around=str(tmp_path))
        assert not found, f"{where} shows {found} of {secret}"


async def test_secrets_are_redacted_before_lines_are_normalised_and_grouped(tmp_path):
    secret_log(tmp_path / "app.log")
    result = await investigate([tmp_path], paths=["app.log"])
    top = {group["line"]: group["count"] for group in result.data["top"]}
    assert top == {
        "ERROR auth failed for [REDACTED]": 2,  # one error, whichever token: grouped after redaction
        "ERROR slack post failed: token [REDACTED] rejected": 1,
        "ERROR tls setup failed, key follows:": 1,
        "ERROR cannot connect to postgres://app:[REDACTED]@db:<n>/main": 1,
    }
    key = next(g for g in result.data["top"] if g["line"].startswith("ERROR tls"))
    assert key["example"].endswith("key follows:\n-----[REDACTED] PRIVATE KEY-----\n[REDACTED]\n[REDACTED]")
    assert result.summary.endswith("top: ERROR auth failed for [REDACTED] (2×)")
    assert_no_secret(
        "the result", json.dumps([result.summary, result.data, result.findings, result.messages]), tmp_path
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(log_lines(), min_size=1, max_size=5), st.integers(1, 100))
def test_no_secret_of_any_shape_reaches_the_result(lines: list[LogLine], max_lines: int):
    """Random secrets in random lines of a real file, through the whole agent: groups, summary, findings. What the
    agent says of the same lines without their secrets (its own words: "window", "start", …) is not a secret shown."""

    def said(texts: list[str], logs: Path) -> str:
        write(logs / "app.log", *(f"{iso(1)} {text}" for text in texts))  # in the window, whatever stamp it has
        result = asyncio.run(investigate([logs], paths=["app.log"], max_lines=max_lines))
        assert result.data["error_count"] >= 1
        # The window is the agent's clock, not the log's text: its microseconds are six random digits, which matched
        # five of a secret's now and then (".288341" in a window's start against a Slack token's "…5680069488341…").
        data = {**result.data, "window": None}
        return json.dumps([result.summary, data, result.findings, result.messages], ensure_ascii=False)

    with tempfile.TemporaryDirectory() as tmp:
        shown_text = said([line.text for line in lines], Path(tmp))
        around = said([line.around for line in lines], Path(tmp))
    for line in lines:
        assert not shown(line.secret, shown_text, around), (line.text, shown_text)


def everything_stored(engine) -> str:
    """Every row of every table of the test's database, as text."""
    with engine.connect() as db:
        tables = db.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        return "\n".join(
            str(row) for table in tables for row in db.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t'))
        )


async def test_a_secret_in_a_services_log_is_never_stored_shown_or_in_history_in_clear(
    api, temporal_client, engine, settings, tmp_path
):
    logs = tmp_path / "logs"
    secret_log(logs / "checkout.log")
    settings.log_roots = [logs]
    incident = await run_playbook(api, [step("logs", "investigate_logs", params={"paths": ["checkout.log"]})])
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    (logs_step,) = state.steps
    assert logs_step.output["summary"].endswith("top: ERROR auth failed for [REDACTED] (2×)")
    assert_no_secret("the workflow's state", json.dumps(msgspec.to_builtins(state)), tmp_path)
    with Session(engine) as session:
        said = session.exec(select(ConversationMessage).where(ConversationMessage.incident_id == incident["id"])).all()
    assert any("ERROR auth failed for [REDACTED]" in m.content for m in said)  # the tool's message was stored
    assert_no_secret("Postgres", everything_stored(engine), tmp_path)
    history = await temporal_client.get_workflow_handle(incident["workflow_id"]).fetch_history()
    assert_no_secret(
        "the history", b"".join(e.SerializeToString() for e in history.events).decode(errors="replace"), tmp_path
    )
    for path in (
        f"/api/incidents/{incident['id']}",
        f"/api/incidents/{incident['id']}/timeline",
        f"/api/conversations?incident={incident['id']}",
        f"/api/workflows/{incident['workflow_id']}",
        f"/incidents/{incident['id']}",  # the incident page
    ):
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert_no_secret(path, response.text, tmp_path)


async def test_a_failure_quoting_a_secret_is_redacted_wherever_it_is_kept(
    api, temporal_client, engine, settings, tmp_path
):
    """Loki echoing the query in its error, Loki's URL with credentials: the failed step's error, its run, the
    conversation and the history show neither."""
    Loki.requests, Loki.status = [], 400
    Loki.error = f'parse error at line 1, col 20: syntax error: unexpected "{GITHUB_TOKENS[0]}"'
    with serving(Loki) as base:
        loki_url = base.replace("://", "://admin:hunter2hunter2@")
        params = {"loki_url": loki_url, "loki_query": f'{{app="checkout"}} |= "{GITHUB_TOKENS[0]}"'}
        incident = await run_playbook(api, [step("logs", "investigate_logs", params=params)])
        async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
            outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "failed" and state.steps[0].status == "failed"
    assert 'Loki refused the query (HTTP 400): {"message": "parse error' in str(state.steps[0].error)
    assert 'unexpected \\"[REDACTED]\\"' in str(state.steps[0].error)
    with Session(engine) as session:
        (run,) = session.exec(select(AgentRun).where(AgentRun.workflow_id == incident["workflow_id"])).all()
    assert run.status == "failed" and "unexpected" in str(run.error)
    assert_no_secret("Postgres", everything_stored(engine), tmp_path)
    history = await temporal_client.get_workflow_handle(incident["workflow_id"]).fetch_history()
    failed = "activity_task_failed_event_attributes"
    failures = [str(getattr(e, failed).failure) for e in history.events if e.HasField(failed)]
    assert failures and "[REDACTED]" in failures[0]
    assert_no_secret("the failure in the history", "\n".join(failures), tmp_path)


async def test_a_configuration_error_is_named_as_one_a_restart_cannot_fix(tmp_path):
    """Issue 19, finding 5: the approver was asked to restart a service whose log said "config error"; the log
    step now says first that a restart is unlikely to help, and tells playbooks (`restart_helps`)."""
    logs = tmp_path / "logs"
    write(
        logs / "shop.log",
        f"{iso(3)} ERROR connection reset by peer",
        f"{iso(2)} ERROR config error: invalid setting POOL_SIZE=-1",
        f"{iso(1)} ERROR config error: invalid setting POOL_SIZE=-1",
    )
    found = await investigate([logs], paths=["shop.log"])
    assert found.ok is False and found.data["error_count"] == 3
    assert found.summary.startswith(
        "configuration error, a restart is unlikely to fix it: "
        "ERROR config error: invalid setting POOL_SIZE=-<n> (2×); shop.log: 3 errors in the last 30 min"
    )
    assert found.findings[0]["title"] == "configuration error: a restart is unlikely to fix it"
    assert (found.data["restart_helps"], found.data["diagnosis"]) == (False, "config_error")

    for line, helps in [
        ("FATAL: could not load configuration file /etc/shop.yaml", False),
        ("ERROR missing required environment variable DATABASE_URL", False),
        ("ERROR unknown directive 'proxy_pas' in nginx.conf", False),
        ("ERROR upstream timed out while reading the configuration service's answer", True),
        ("ERROR out of memory: killed process 312", True),
    ]:
        write(logs / "one.log", f"{iso(1)} {line}")
        answer = await investigate([logs], paths=["one.log"])
        assert answer.data["restart_helps"] is helps, line
    write(logs / "ok.log", f"{iso(1)} INFO all good")
    assert (await investigate([logs], paths=["ok.log"])).data["diagnosis"] == "clean"
