"""investigate_metrics: PromQL queries against a Prometheus-compatible HTTP API (Prometheus, Thanos,
VictoriaMetrics, Mimir), each judged against a threshold — its newest value, and over a range its worst point."""

from __future__ import annotations

import asyncio
import json
import math
import operator
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import httpx
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps, agent_result
from activities.heartbeat import beat, interval
from core.agents import AgentSpec, object_schema
from core.outbound import blocked_reason
from core.payloads import AgentInput, AgentResult
from core.redact import redact_text

T = TypeVar("T")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
NEGATED = {">": "≤", ">=": "<", "<": "≥", "<=": ">"}
SERIES_KEPT = 10  # per query in data; the count of all is kept too
LABEL_VALUE_MAX = 200
BODY_MAX = 10 * 1024 * 1024  # an answer this big is not a threshold check: the query should aggregate
CONCURRENCY = 4  # queries in flight at once, so 20 of them do not all queue behind one slow one
SUMMARY_MAX = 1500
# Prometheus's errors that are the query's fault (bad PromQL, a query it cannot execute, an unknown endpoint):
# asking again gives the same answer. Its other errors (timeout, canceled, unavailable, internal) may pass.
QUERY_FAULTS = {"bad_data", "execution", "not_found"}

QUERY_SCHEMA = object_schema(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "query": {"type": "string", "minLength": 1, "maxLength": 4000},
        "threshold": {"type": "number"},
        "op": {"enum": list(OPS)},
        "range_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 7 * 24 * 60},
        "step": {"type": "number", "minimum": 1, "maximum": 86_400},
        "unit": {"type": "string", "maxLength": 20},
    },
    required=("name", "query", "threshold"),
)


def _refuse(message: str) -> ApplicationError:
    """The step's params (URL, query) must change: another attempt would get the same answer."""
    return ApplicationError(message, type="MetricsQueryError", non_retryable=True)


def _transient(message: str) -> ApplicationError:
    """Prometheus is down, slow or overloaded: Temporal retries the step."""
    return ApplicationError(message, type="PrometheusUnavailable")


def _finite(value: float) -> float | str:
    """JSON-safe (Postgres JSONB refuses NaN and Infinity): non-finite values as Prometheus writes them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def _shown(value: float, unit: str) -> str:
    if not math.isfinite(value):
        text = str(_finite(value))
    elif abs(value) >= 1:
        text = f"{round(value, 3):.15g}"
    else:
        text = f"{value:.3g}"
    return f"{text}{unit}" if unit in ("", "%") else f"{text} {unit}"


def _labels_text(labels: dict[str, str]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__")
    return f" ({shown[:150]}{'…' if len(shown) > 150 else ''})" if shown else ""


@dataclass
class Series:
    labels: dict[str, str]
    points: list[float]  # oldest first; one for an instant vector or a scalar

    @property
    def newest(self) -> float:
        return self.points[-1]

    def extreme(self, pick: Callable[..., float]) -> float:
        numbers = [p for p in self.points if not math.isnan(p)]
        return pick(numbers) if numbers else math.nan


def _number(sample: Any, where: str) -> float:
    try:
        return float(sample[1])  # [<unix time>, "<value>"]: the value is a string ("NaN", "+Inf" included)
    except (TypeError, ValueError, IndexError):
        raise _refuse(
            f"{where}: the answer holds a sample that is not [time, value]: {redact_text(str(sample), 100)}"
        ) from None


def parse_result(data: Any, where: str) -> list[Series]:
    """The series of a query's `data` ({"resultType", "result"}); native-histogram samples are left out."""
    if not isinstance(data, dict) or not isinstance(data.get("result"), list | None):
        raise _refuse(f"{where}: the answer has no data.result: is this a Prometheus HTTP API?")
    kind, result = data.get("resultType"), data.get("result") or []
    if kind == "scalar":
        return [Series({}, [_number(result, where)])]
    if kind not in ("vector", "matrix"):
        raise _refuse(f"{where}: the query returns a {kind}, not numbers")
    found = []
    for item in result:
        if not isinstance(item, dict):
            continue
        samples = [item["value"]] if "value" in item else item.get("values") or []
        if not samples:
            continue  # a histogram-only series: no float value to judge
        metric = list((item.get("metric") or {}).items())[:30]
        labels = {str(k)[:100]: redact_text(str(v), LABEL_VALUE_MAX) for k, v in metric}
        found.append(Series(labels, [_number(sample, where) for sample in samples]))
    return found


@dataclass
class Judgement:
    spec: dict[str, Any]
    series: list[Series]
    warnings: list[str]

    @property
    def op(self) -> str:
        return str(self.spec.get("op", ">"))

    @property
    def ranged(self) -> bool:
        return "range_minutes" in self.spec

    def worst_point(self, series: Series) -> float:
        """What is judged: the newest value, or over a range the point furthest on the breaching side."""
        if not self.ranged:
            return series.newest
        return series.extreme(max if self.op.startswith(">") else min)

    def breaches(self, series: Series) -> bool:
        check, threshold = OPS[self.op], float(self.spec["threshold"])
        return check(series.newest, threshold) or check(self.worst_point(series), threshold)

    def ranked(self) -> list[Series]:
        """Worst first: furthest on the breaching side (NaN last)."""

        def badness(series: Series) -> float:
            point = self.worst_point(series)
            if math.isnan(point):
                return -math.inf
            return point if self.op.startswith(">") else -point

        return sorted(self.series, key=badness, reverse=True)

    def as_data(self) -> dict[str, Any]:
        ranked = self.ranked()
        out: dict[str, Any] = {
            "name": self.spec["name"],
            "query": self.spec["query"],
            "value": _finite(ranked[0].newest) if ranked else None,
            "threshold": self.spec["threshold"],
            "op": self.op,
            "breached": any(self.breaches(s) for s in ranked),
            "series": [self._series_data(s) for s in ranked[:SERIES_KEPT]],
            "series_total": len(ranked),
            "breached_series": sum(self.breaches(s) for s in ranked),
        }
        if ranked:
            out["labels"] = ranked[0].labels
        if self.ranged:
            out["range_minutes"] = self.spec["range_minutes"]
            if ranked:
                out["max"], out["min"] = _finite(ranked[0].extreme(max)), _finite(ranked[0].extreme(min))
        if self.spec.get("unit"):
            out["unit"] = self.spec["unit"]
        if self.warnings:
            out["warnings"] = self.warnings[:5]
        return out

    def _series_data(self, series: Series) -> dict[str, Any]:
        shown: dict[str, Any] = {"labels": series.labels, "value": _finite(series.newest)}
        if self.ranged:
            shown["max"], shown["min"] = _finite(series.extreme(max)), _finite(series.extreme(min))
        return shown

    def line(self) -> str:
        """One line for the summary: "error_rate 12.5% > 5% (service=checkout)"."""
        name, unit, op = self.spec["name"], str(self.spec.get("unit", "")), self.op
        if not self.series:
            return f"{name}: no data"
        worst = self.ranked()[0]
        threshold, now = _shown(float(self.spec["threshold"]), unit), _shown(worst.newest, unit)
        if not self.breaches(worst):
            return f"{name} {now} {NEGATED[op]} {threshold}"
        count = sum(self.breaches(s) for s in self.series)
        of = f" [{count} of {len(self.series)} series]" if len(self.series) > 1 else ""
        if not OPS[op](worst.newest, float(self.spec["threshold"])):
            peak = _shown(self.worst_point(worst), unit)
            when = f"in the last {self.spec['range_minutes']:g} min"
            return f"{name} reached {peak} {op} {threshold} {when} (now {now}){_labels_text(worst.labels)}{of}"
        return f"{name} {now} {op} {threshold}{_labels_text(worst.labels)}{of}"


async def gather_heartbeating(work: list[Awaitable[T]], what: str) -> list[T]:
    """Await all, heartbeating meanwhile; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=interval(), return_when=asyncio.FIRST_EXCEPTION)
            # Every failure is retrieved (else asyncio logs "exception was never retrieved"); the first is raised.
            errors = [error for t in done if not t.cancelled() and (error := t.exception()) is not None]
            if errors:
                raise errors[0]
            beat(f"{what}: {len(tasks) - len(pending)} of {len(tasks)} done")
        return [t.result() for t in tasks]
    finally:
        for task in tasks:
            task.cancel()


class InvestigateMetricsAgent:
    spec: ClassVar[AgentSpec] = AgentSpec(
        name="investigate_metrics",
        version="1.0.0",
        simulation="read",  # it only reads: a dry run runs it for real
        description=(
            "Runs PromQL queries on a Prometheus-compatible HTTP API and judges each against a threshold "
            "(instant, or the worst point over the last N minutes); negative when any threshold is breached"
        ),
        capabilities=("investigation",),
        params_schema=object_schema(
            {
                "prometheus_url": {"type": "string", "maxLength": 500, "pattern": r"^https?://\S+$"},
                "queries": {"type": "array", "minItems": 1, "maxItems": 20, "items": QUERY_SCHEMA},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
            },
        ),
        default_risk="low",
    )

    def __init__(self, deps: AgentDeps) -> None:
        self._http = deps.http
        self._settings = deps.settings

    async def run(self, input: AgentInput) -> AgentResult:
        base = str(input.params.get("prometheus_url") or self._settings.prometheus_url).rstrip("/")
        if not base:
            # A negative result rather than an error: the playbook goes on (nothing was judged, resolved None),
            # and the summary says what to configure.
            return agent_result(
                False,
                "cannot query metrics: no Prometheus URL (set PROMETHEUS_URL or params.prometheus_url)",
                data={"configured": False, "queries": [], "breached": []},
            )
        # The step's queries, else the registered service's `metrics_queries` (POST /api/services).
        service = (input.context or {}).get("service") or {}
        specs: list[dict[str, Any]] = input.params.get("queries") or service.get("metrics_queries") or []
        if not specs:
            return agent_result(
                False,
                "no metrics to judge: give params.queries or register the service's metrics_queries",
                data={"configured": False, "queries": [], "breached": []},
            )
        names = [q["name"] for q in specs]
        if len(set(names)) < len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            raise _refuse(f"investigate_metrics: params.queries: the name {duplicate!r} is used twice")
        timeout = float(input.params.get("timeout_seconds", 10))
        now = time.time()
        gate = asyncio.Semaphore(CONCURRENCY)

        async def judge(spec: dict[str, Any]) -> Judgement:
            async with gate:
                return await self._judge(base, spec, now, timeout)

        judged = await gather_heartbeating([judge(q) for q in specs], "PromQL queries")
        queries = [j.as_data() for j in judged]
        breached = [q["name"] for q in queries if q["breached"]]
        summary = "; ".join(j.line() for j in judged)
        if len(summary) > SUMMARY_MAX:
            summary = summary[: SUMMARY_MAX - 1] + "…"
        host = _where(base)
        findings = [
            {
                "title": j.line(),
                "detail": f"{j.spec['query']} on {host}: {q['breached_series']} of {q['series_total']} series "
                f"{j.op} {j.spec['threshold']:g}{j.spec.get('unit', '')}",
                "severity": "warning",
                "source": "investigate_metrics",
                "query": j.spec["name"],
            }
            for j, q in zip(judged, queries, strict=True)
            if q["breached"]
        ]
        no_data = [q["name"] for q in queries if not q["series_total"]]
        evidence = "\n".join(f"{j.spec['name']}: {redact_text(j.spec['query'], 300)} → {j.line()}" for j in judged)
        return agent_result(
            not breached,
            summary,
            data={
                "prometheus": host,
                "time": datetime.fromtimestamp(now, UTC).isoformat(),
                "queries": queries,
                "breached": breached,
                "no_data": no_data,
            },
            findings=findings,
            # No data for a query means it cannot tell: not "resolved".
            resolved=False if breached else (None if no_data else True),
            messages=[{"role": "tool", "content": f"PromQL on {host}:\n{evidence}", "metadata": {"queries": names}}],
        )

    async def _judge(self, base: str, spec: dict[str, Any], now: float, timeout: float) -> Judgement:
        params: dict[str, str] = {"query": spec["query"]}
        if "range_minutes" in spec:
            seconds = float(spec["range_minutes"]) * 60
            # Default resolution: 240 points at most (and no finer than 15 s, a common scrape interval).
            step = float(spec.get("step") or max(15.0, seconds / 240))
            params.update(start=f"{now - seconds:.3f}", end=f"{now:.3f}", step=f"{step:g}")
            path = "/api/v1/query_range"
        else:
            params["time"] = f"{now:.3f}"
            path = "/api/v1/query"
        payload = await self._get(base + path, params, timeout, spec)
        where = f"query {spec['name']}"
        warnings = [redact_text(str(w), 300) for w in payload.get("warnings") or []]
        return Judgement(spec, parse_result(payload.get("data"), where), warnings)

    async def _get(self, url: str, params: dict[str, str], timeout: float, spec: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer of a successful query; otherwise raises, retryable or not as the error is."""
        name, host = spec["name"], _where(url)
        try:
            async with asyncio.timeout(timeout):  # the whole exchange; httpx's timeout is per read
                async with self._http.stream("GET", url, params=params, timeout=timeout) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > BODY_MAX:
                            raise _refuse(
                                f"query {name} answers more than {BODY_MAX // 2**20} MB: aggregate it "
                                "(sum by, topk) so it returns a few series"
                            )
        except (TimeoutError, httpx.TimeoutException):
            raise _transient(f"Prometheus at {host} did not answer query {name} within {timeout:g}s") from None
        except httpx.InvalidURL as err:
            raise _refuse(f"the Prometheus URL is not valid: {err}") from None
        except httpx.HTTPError as err:
            reason = blocked_reason(err)
            if reason is not None:  # the URL, a param or a setting, must change: retrying cannot help
                raise _refuse(f"the Prometheus URL is refused: {reason}") from None
            raise _transient(f"cannot reach Prometheus at {host}: {err}") from None
        code = response.status_code
        try:
            payload = json.loads(bytes(body))
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or payload.get("status") not in ("success", "error"):
            excerpt = " ".join(redact_text(bytes(body).decode(errors="replace"), 200).split())
            if code >= 500 or code in (408, 429):
                raise _transient(f"Prometheus at {host} answered HTTP {code} to query {name}: {excerpt}")
            raise _refuse(
                f"{host} does not answer like a Prometheus HTTP API (HTTP {code} to {url.rsplit('/', 1)[-1]}"
                f"{': ' + excerpt if excerpt else ''}); check the URL"
            )
        if payload["status"] == "error" or code >= 400:
            kind, error = payload.get("errorType") or f"HTTP {code}", redact_text(str(payload.get("error") or ""), 500)
            if kind in QUERY_FAULTS or (400 <= code < 500 and code not in (408, 429)):
                query = redact_text(spec["query"], 200)
                raise _refuse(f"query {name} ({query!r}) refused by Prometheus: {kind}: {error}")
            raise _transient(f"Prometheus at {host} could not answer query {name}: {kind}: {error}")
        return payload


def _where(url: str) -> str:
    """host:port only: a URL may carry credentials."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
