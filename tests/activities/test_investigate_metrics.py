"""investigate_metrics against a real local server speaking the Prometheus HTTP API, and in a real run."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps
from activities.metrics import InvestigateMetricsAgent
from core.conversations import ConversationMessage
from core.outbound import OutboundPolicy, guarded_async_client
from core.payloads import AgentInput, AgentResult, IncidentContext
from core.settings import Settings
from core.tables import WorkflowStep
from tests.factories import wait_for_workflow
from tests.peers import closed_port_url, http_service
from tests.peers_prometheus import prometheus_api
from tests.secret_shapes import shown
from tests.workflows.test_engine import run_playbook, runs, step
from worker.runner import incident_worker

ERROR_RATE = (
    'sum by (service) (rate(http_requests_total{code=~"5.."}[5m]))'
    " / sum by (service) (rate(http_requests_total[5m])) * 100"
)
P99 = "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m]))) * 1000"


def error_rate(threshold: float = 5, **extra: Any) -> dict[str, Any]:
    return {"name": "error_rate", "query": ERROR_RATE, "threshold": threshold, "unit": "%", **extra}


def p99(threshold: float = 500, **extra: Any) -> dict[str, Any]:
    return {"name": "p99_latency", "query": P99, "threshold": threshold, "unit": "ms", **extra}


async def investigate(
    params: dict[str, Any],
    *,
    http: httpx.AsyncClient | None = None,
    context: dict[str, Any] | None = None,
    **settings: Any,
) -> AgentResult:
    async with http or httpx.AsyncClient() as client:
        agent = InvestigateMetricsAgent(AgentDeps(http=client, settings=Settings(_env_file=None, **settings)))
        problem = agent.spec.params_problem(params)
        assert problem is None, problem
        return await agent.run(
            AgentInput(
                incident=IncidentContext(incident_id=1, title="checkout errors", service="checkout", severity="P2"),
                workflow_id="incident-1",
                step_id="metrics",
                params=params,
                context=context,
            )
        )


async def test_a_breached_threshold_is_a_negative_finding_naming_the_worst_series():
    with prometheus_api() as (base, prom):
        prom.series = {ERROR_RATE: [({"service": "checkout"}, 12.5)], P99: [({}, 310)]}
        before = time.time()
        result = await investigate({"prometheus_url": base, "queries": [error_rate(), p99()]})
    assert result.ok is False and result.resolved is False
    assert result.summary == "error_rate 12.5% > 5% (service=checkout); p99_latency 310 ms ≤ 500 ms"
    assert result.data["breached"] == ["error_rate"]
    rate, latency = result.data["queries"]
    assert rate == {
        "name": "error_rate",
        "query": ERROR_RATE,
        "value": 12.5,
        "threshold": 5,
        "op": ">",
        "breached": True,
        "series": [{"labels": {"service": "checkout"}, "value": 12.5}],
        "series_total": 1,
        "breached_series": 1,
        "labels": {"service": "checkout"},
        "unit": "%",
    }
    assert latency["breached"] is False and latency["value"] == 310
    (finding,) = result.findings
    assert finding["title"] == "error_rate 12.5% > 5% (service=checkout)" and finding["severity"] == "warning"
    assert ERROR_RATE in finding["detail"]
    assert sorted(prom.queries) == sorted([ERROR_RATE, P99])
    for request in prom.requests:  # both evaluated at the same instant
        assert request.path == "/api/v1/query"
        assert before <= float(request.params["time"]) <= time.time()
    assert len({r.params["time"] for r in prom.requests}) == 1
    (evidence,) = result.messages
    assert evidence["role"] == "tool" and ERROR_RATE in evidence["content"]


async def test_no_breach_is_resolved():
    with prometheus_api() as (base, prom):
        prom.series = {ERROR_RATE: [({"service": "checkout"}, 0.25)], P99: [({}, 499.5)]}
        result = await investigate({"prometheus_url": base, "queries": [error_rate(), p99(op=">=")]})
    assert result.ok is True and result.resolved is True and result.findings == []
    assert result.summary == "error_rate 0.25% ≤ 5%; p99_latency 499.5 ms < 500 ms"
    assert result.data["breached"] == []


@pytest.mark.parametrize(
    ("op", "value", "breached"),
    [(">", 5, False), (">=", 5, True), ("<", 5, False), ("<=", 5, True), ("<", 4.99, True), (">", 5.01, True)],
)
async def test_every_operator_at_the_threshold(op, value, breached):
    with prometheus_api() as (base, prom):
        prom.series = {"up_ratio": [({}, value)]}
        query = {"name": "q", "query": "up_ratio", "threshold": 5, "op": op}
        result = await investigate({"prometheus_url": base, "queries": [query]})
    assert result.data["queries"][0]["breached"] is breached and result.ok is not breached


async def test_several_series_are_each_judged_and_the_worst_is_reported_bounded():
    with prometheus_api() as (base, prom):
        series = [({"service": f"svc-{n:02}", "instance": f"10.0.0.{n}:9100"}, n / 2) for n in range(15)]
        prom.series = {ERROR_RATE: series}
        result = await investigate({"prometheus_url": base, "queries": [error_rate()]})
    (query,) = result.data["queries"]
    assert query["series_total"] == 15 and query["breached_series"] == 4  # 5.5, 6, 6.5, 7
    assert len(query["series"]) == 10
    assert [s["value"] for s in query["series"][:4]] == [7, 6.5, 6, 5.5]  # worst first
    assert query["value"] == 7 and query["labels"] == {"service": "svc-14", "instance": "10.0.0.14:9100"}
    assert result.summary == "error_rate 7% > 5% (service=svc-14, instance=10.0.0.14:9100) [4 of 15 series]"


async def test_a_range_query_judges_the_newest_value_and_the_peak():
    with prometheus_api() as (base, prom):
        prom.series = {
            ERROR_RATE: [({"service": "checkout"}, [1, 2, 20, 3]), ({"service": "cart"}, [0.5, 0.5])],
            P99: [({}, 420)],  # the same value at every step
        }
        result = await investigate(
            {"prometheus_url": base, "queries": [error_rate(range_minutes=30), p99(range_minutes=10, step=60)]}
        )
    rate, latency = result.data["queries"]
    assert rate["breached"] is True and rate["value"] == 3 and rate["max"] == 20 and rate["min"] == 1
    assert rate["series"][0] == {"labels": {"service": "checkout"}, "value": 3, "max": 20, "min": 1}
    assert latency["breached"] is False and latency["max"] == 420
    assert result.summary == (
        "error_rate reached 20% > 5% in the last 30 min (now 3%) (service=checkout) [1 of 2 series]; "
        "p99_latency 420 ms ≤ 500 ms"
    )
    by_query = {r.params["query"]: r for r in prom.requests}
    assert {r.path for r in prom.requests} == {"/api/v1/query_range"}
    ranged = by_query[ERROR_RATE].params
    assert float(ranged["end"]) - float(ranged["start"]) == pytest.approx(1800)
    assert ranged["step"] == "15"  # the default: no finer than 15 s, at most 240 points
    assert by_query[P99].params["step"] == "60"


async def test_a_range_below_a_floor_breaches_on_its_lowest_point():
    with prometheus_api() as (base, prom):
        prom.series = {"avg_over_time(up[1m]) * 100": [({"job": "api"}, [100, 96, 100])]}
        query = {"name": "availability", "query": "avg_over_time(up[1m]) * 100", "threshold": 99, "op": "<"}
        result = await investigate({"prometheus_url": base, "queries": [{**query, "unit": "%", "range_minutes": 15}]})
    assert result.ok is False
    assert result.summary == "availability reached 96% < 99% in the last 15 min (now 100%) (job=api)"


async def test_nan_and_infinity_are_judged_and_stay_json_safe():
    with prometheus_api() as (base, prom):
        prom.series = {
            "idle_ratio": [({"pod": "a"}, "NaN"), ({"pod": "b"}, 0.5)],
            "queue_growth": [({"queue": "mail"}, "+Inf")],
            "no_requests": [({}, ["NaN", "NaN"])],
        }
        queries = [
            {"name": "idle", "query": "idle_ratio", "threshold": 0.9},
            {"name": "growth", "query": "queue_growth", "threshold": 100},
            {"name": "empty_range", "query": "no_requests", "threshold": 1, "range_minutes": 5},
        ]
        result = await investigate({"prometheus_url": base, "queries": queries})
    idle, growth, empty = result.data["queries"]
    assert idle["breached"] is False and idle["value"] == 0.5  # NaN never breaches and ranks last
    assert idle["series"][1] == {"labels": {"pod": "a"}, "value": "NaN"}
    assert growth["breached"] is True and growth["value"] == "+Inf"
    assert empty["breached"] is False and empty["value"] == "NaN" and empty["max"] == "NaN"
    assert result.summary == "idle 0.5 ≤ 0.9; growth +Inf > 100 (queue=mail); empty_range NaN ≤ 1"
    json.dumps(result.data, allow_nan=False)  # Postgres JSONB refuses NaN


async def test_no_data_and_a_scalar():
    with prometheus_api() as (base, prom):
        prom.series = {'up{job="gone"}': []}
        prom.scalars = {"scalar(sum(up))": "3"}
        queries = [
            {"name": "gone", "query": 'up{job="gone"}', "threshold": 0, "op": "<="},
            {"name": "targets_up", "query": "scalar(sum(up))", "threshold": 2, "op": "<"},
        ]
        result = await investigate({"prometheus_url": base, "queries": queries})
    assert result.summary == "gone: no data; targets_up 3 ≥ 2"
    assert result.ok is True and result.resolved is None  # no data: it cannot tell
    assert result.data["no_data"] == ["gone"] and result.data["queries"][0]["value"] is None
    assert result.data["queries"][1]["series"] == [{"labels": {}, "value": 3}]


async def test_a_bad_query_is_non_retryable_and_named():
    with prometheus_api() as (base, prom):
        prom.series = {P99: [({}, 100)]}
        with pytest.raises(ApplicationError) as raised:
            await investigate({"prometheus_url": base, "queries": [p99(), error_rate()]})
    assert raised.value.non_retryable is True
    message = str(raised.value)
    assert "query error_rate" in message and "sum by (service)" in message
    assert "bad_data" in message and "parse error" in message


async def test_a_query_prometheus_cannot_execute_is_non_retryable():
    with prometheus_api() as (base, prom):
        prom.fail = (422, "execution", "found duplicate series for the match group")
        with pytest.raises(ApplicationError) as raised:
            await investigate({"prometheus_url": base, "queries": [p99()]})
    assert raised.value.non_retryable is True and "duplicate series" in str(raised.value)


async def test_server_down_overloaded_or_slow_raises_for_a_retry():
    with pytest.raises(ApplicationError) as down:
        await investigate({"prometheus_url": closed_port_url().removesuffix("/health"), "queries": [p99()]})
    assert down.value.non_retryable is False and "cannot reach Prometheus at 127.0.0.1:" in str(down.value)
    with prometheus_api() as (base, prom):
        prom.fail = (503, "unavailable", "TSDB not ready")
        with pytest.raises(ApplicationError) as unavailable:
            await investigate({"prometheus_url": base, "queries": [p99()]})
        prom.fail, prom.delay = None, 2.0
        prom.series = {P99: [({}, 100)]}
        started = time.monotonic()
        with pytest.raises(ApplicationError) as slow:
            await investigate({"prometheus_url": base, "queries": [p99()], "timeout_seconds": 0.3})
    assert unavailable.value.non_retryable is False and "TSDB not ready" in str(unavailable.value)
    assert slow.value.non_retryable is False and "did not answer query p99_latency within 0.3s" in str(slow.value)
    assert time.monotonic() - started < 1.5


async def test_secrets_in_prometheus_answers_are_redacted_before_they_are_cut():
    """A label value (cut to 200 characters) and the excerpt of an answer that is not the API's (in the error the
    step fails with, kept in Temporal's history) show none of a secret they quote."""
    token = "ghp_0123456789abcdefABCDEFGHIJklmnopqrst"
    with prometheus_api() as (base, prom):
        prom.series = {P99: [({"service": "checkout", "url": f"{'x' * 180} {token}"}, 900)]}
        result = await investigate({"prometheus_url": base, "queries": [p99()]})
    assert result.ok is False and result.data["queries"][0]["labels"]["url"] == "x" * 180 + " "
    assert not shown(token[4:], json.dumps([result.summary, result.data, result.findings, result.messages]))
    with http_service() as (url, state):
        state.status, state.body = 502, f"<html>upstream failed: {token}</html>".encode()
        with pytest.raises(ApplicationError) as raised:
            await investigate({"prometheus_url": url, "queries": [p99()]})
    assert "answered HTTP 502 to query p99_latency: <html>upstream failed: [REDACTED]" in str(raised.value)


async def test_a_url_that_is_not_prometheus_or_is_refused_is_non_retryable():
    with prometheus_api() as (base, _):
        with pytest.raises(ApplicationError) as wrong:  # a missing path prefix, say: 404 page not found
            await investigate({"prometheus_url": f"{base}/prometheus", "queries": [p99()]})
        guarded = guarded_async_client(OutboundPolicy(allow_loopback=False))
        with pytest.raises(ApplicationError) as refused:
            await investigate({"prometheus_url": base, "queries": [p99()]}, http=guarded)
    assert wrong.value.non_retryable is True and "does not answer like a Prometheus HTTP API" in str(wrong.value)
    assert "HTTP 404" in str(wrong.value)
    assert refused.value.non_retryable is True and "loopback" in str(refused.value)


async def test_the_url_comes_from_the_settings_unless_the_step_names_one():
    with prometheus_api() as (base, prom):
        prom.series = {P99: [({}, 100)]}
        result = await investigate({"queries": [p99()]}, prometheus_url=f"{base}/")
    assert result.ok is True and prom.requests[0].path == "/api/v1/query"


async def test_without_a_url_the_result_says_what_to_configure():
    result = await investigate({"queries": [p99()]})
    assert result.ok is False and result.resolved is None
    assert "PROMETHEUS_URL or params.prometheus_url" in result.summary


async def test_duplicate_names_are_refused():
    with prometheus_api() as (base, _), pytest.raises(ApplicationError) as raised:
        await investigate({"prometheus_url": base, "queries": [p99(), p99()]})
    assert raised.value.non_retryable is True and "'p99_latency' is used twice" in str(raised.value)


async def test_bad_params_are_refused_when_the_playbook_is_stored(api):
    for params, problem in [
        ({"queries": []}, "params.queries: [] should be non-empty"),
        ({"queries": [{"name": "x", "query": "up"}]}, "params.queries.0: 'threshold' is a required property"),
        ({"queries": [p99(op="=")]}, "params.queries.0.op: '=' is not one of"),
        ({"queries": [p99()], "prometheus_url": "ftp://x"}, "params.prometheus_url: 'ftp://x' does not match"),
    ]:
        body = {"id": "m-bad", "name": "bad", "steps": [step("metrics", "investigate_metrics", params=params)]}
        stored = await api.post("/api/playbooks", json=body)
        assert stored.status_code == 422, stored.text
        assert f"step metrics: {problem}" in stored.text


async def test_in_a_real_run_a_breach_is_the_output_and_a_bad_query_fails_at_once(
    api, temporal_client, engine, settings
):
    with prometheus_api() as (base, prom):
        prom.series = {ERROR_RATE: [({"service": "checkout"}, 12.5)], P99: [({}, 310)]}
        settings.prometheus_url = base
        incident = await run_playbook(
            api,
            [
                step("metrics", "investigate_metrics", params={"queries": [error_rate(), p99()]}),
                step(
                    "broken",
                    "investigate_metrics",
                    params={"queries": [{"name": "typo", "query": "rate(http_requests_total[5m]", "threshold": 1}]},
                    on_failure="continue",
                ),
                step("remediate", "noop", "metrics", when="!steps.metrics.output.resolved"),
            ],
        )
        async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
            outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    by_id = {s.step_id: s for s in state.steps}
    metrics = by_id["metrics"]
    assert metrics.status == "completed"  # a negative finding informs; it fails the step only if asked to
    assert metrics.output["ok"] is False and metrics.output["resolved"] is False
    assert metrics.output["summary"] == "error_rate 12.5% > 5% (service=checkout); p99_latency 310 ms ≤ 500 ms"
    assert metrics.output["data"]["breached"] == ["error_rate"]
    assert by_id["remediate"].status == "completed"
    broken = by_id["broken"]
    assert broken.status == "failed" and "query typo" in broken.error and "bad_data" in broken.error
    ran = runs(engine, incident["workflow_id"])
    assert [r.status for r in ran["metrics"]] == ["succeeded"]
    assert [r.status for r in ran["broken"]] == ["failed"]  # non-retryable: one attempt only
    with Session(engine) as session:
        row = session.exec(
            select(WorkflowStep).where(
                WorkflowStep.workflow_id == incident["workflow_id"], WorkflowStep.step_id == "metrics"
            )
        ).one()
        messages = session.exec(
            select(ConversationMessage)
            .where(ConversationMessage.workflow_id == incident["workflow_id"], ConversationMessage.step_id == "metrics")
            .order_by(col(ConversationMessage.id))
        ).all()
    assert row.status == "completed" and row.output["findings"][0]["title"].startswith("error_rate 12.5% > 5%")
    assert [m.role for m in messages] == ["tool", "assistant"]
    assert ERROR_RATE in messages[0].content and messages[1].content == metrics.output["summary"]


async def test_without_queries_it_judges_the_registered_services_metrics_queries():
    with prometheus_api() as (base, prom):
        prom.series = {ERROR_RATE: [({"service": "checkout"}, 12.5)]}
        service = {"name": "checkout", "metrics_queries": [error_rate(op=">")]}
        result = await investigate({"prometheus_url": base}, context={"service": service})
        assert not result.ok and result.data["breached"] == ["error_rate"]
        nothing = await investigate({"prometheus_url": base}, context={"service": {"name": "checkout"}})
    assert not nothing.ok and nothing.summary.startswith("no metrics to judge: give params.queries")
