"""The pure alert functions: matchers, the choice of a routing rule, what a rule sets, fingerprints, titles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.alerts import (
    REGEX_MAX,
    AlertRouteCreate,
    Matcher,
    ReceivedAlert,
    alert_description,
    alert_title,
    fingerprint_of,
    firing_message,
    moment,
    resolved_message,
    route_alert,
    service_name,
)


def rule(name: str, *, priority: int = 100, **fields) -> AlertRouteCreate:
    return AlertRouteCreate(name=name, priority=priority, **fields)


@pytest.mark.parametrize(
    ("op", "value", "labels", "expected"),
    [
        ("=", "prod", {"env": "prod"}, True),
        ("=", "prod", {"env": "production"}, False),
        ("!=", "prod", {"env": "dev"}, True),
        ("!=", "prod", {"env": "prod"}, False),
        ("=~", "prod|staging", {"env": "staging"}, True),
        ("=~", "prod", {"env": "production"}, False),  # full match, not search
        ("=~", "prod.*", {"env": "production"}, True),
        ("!~", "dev.*", {"env": "prod"}, True),
        ("!~", "dev.*", {"env": "dev-1"}, False),
        ("=", "", {}, True),  # a missing label is ""
        ("!=", "", {}, False),
        ("=~", ".+", {}, False),
    ],
)
def test_matchers(op, value, labels, expected):
    assert Matcher(label="env", op=op, value=value).matches(labels) is expected


def test_regexes_are_checked_and_bounded():
    with pytest.raises(ValidationError, match="not a regular expression"):
        Matcher(label="env", op="=~", value="(unclosed")
    with pytest.raises(ValidationError, match="at most"):
        Matcher(label="env", op="=~", value="a" * (REGEX_MAX + 1))
    with pytest.raises(ValidationError) as err:
        AlertRouteCreate(
            name="r", matchers=[{"label": "x", "op": "=~", "value": "ok"}, {"label": "y", "op": "=~", "value": "["}]
        )
    assert err.value.errors()[0]["loc"] == ("matchers", 1, "value")
    assert Matcher(label="env", op="=", value="(unclosed").matches({"env": "(unclosed"})  # literal for =
    with pytest.raises(ValidationError):
        Matcher(label="env", op="~", value="x")


def test_first_enabled_rule_by_priority_then_id_wins():
    rules = [
        (3, rule("late", priority=50, service="late")),
        (2, rule("tie-later-id", priority=10, service="b")),
        (1, rule("tie-first-id", priority=10, service="a", matchers=[{"label": "team", "value": "db"}])),
        (4, rule("off", priority=0, service="off", enabled=False)),
    ]
    assert route_alert({"team": "db"}, rules).route == "tie-first-id"
    assert route_alert({"team": "web"}, rules).route == "tie-later-id"
    assert route_alert({"team": "web"}, rules[:1]).service == "late"
    nothing = route_alert({"team": "web"}, [(1, rule("only-db", matchers=[{"label": "team", "value": "db"}]))])
    assert (nothing.route, nothing.service, nothing.incident_type, nothing.drop) == (None, "unknown", "alert", False)


def test_service_comes_from_the_route_or_the_labels():
    assert route_alert({"service": "api", "job": "node"}, []).service == "api"
    assert route_alert({"job": "node", "app": "x"}, []).service == "node"
    assert route_alert({"app": "shop"}, []).service == "shop"
    assert route_alert({"service": "  ", "app": "shop"}, []).service == "shop"
    assert route_alert({"alertname": "X"}, []).service == "unknown"
    by_label = [(1, rule("by-ns", service_label="namespace"))]
    assert route_alert({"namespace": "payments", "service": "api"}, by_label).service == "payments"
    assert route_alert({"service": "api"}, by_label).service == "api"  # the label is missing: the defaults
    fixed = [(1, rule("fixed", service="checkout", service_label="namespace"))]
    assert route_alert({"namespace": "payments"}, fixed).service == "checkout"


def test_severity_map_defaults_and_overrides():
    for label, severity in [("critical", "P1"), ("ERROR", "P2"), ("high", "P2"), ("warning", "P3"), ("info", "P4")]:
        assert route_alert({"severity": label}, []).severity == severity
    assert route_alert({"severity": "page"}, []).severity is None
    assert route_alert({}, []).severity is None
    custom = [(1, rule("custom", severity_map={"Page": "P1", "warning": "P2"}))]
    assert route_alert({"severity": "page"}, custom).severity == "P1"
    assert route_alert({"severity": "warning"}, custom).severity == "P2"
    assert route_alert({"severity": "critical"}, custom).severity == "P1"  # the default map still applies
    with pytest.raises(ValidationError):
        rule("bad", severity_map={"critical": "P0"})


def test_a_route_sets_type_playbook_or_drops():
    rules = [
        (1, rule("watchdog", priority=0, drop=True, matchers=[{"label": "alertname", "value": "Watchdog"}])),
        (
            2,
            rule("db", incident_type="database", playbook_id="db-runbook", matchers=[{"label": "team", "value": "db"}]),
        ),
    ]
    assert route_alert({"alertname": "Watchdog", "team": "db"}, rules).drop
    routed = route_alert({"alertname": "Slow", "team": "db"}, rules)
    assert (routed.drop, routed.incident_type, routed.playbook_id, routed.route) == (
        False,
        "database",
        "db-runbook",
        "db",
    )
    with pytest.raises(ValidationError):
        rule("Bad Name")
    with pytest.raises(ValidationError):
        rule("x", incident_type="Not A Type")


def test_service_names_are_cleaned():
    assert service_name("checkout") == "checkout"
    assert service_name("my service!") == "my-service-"
    assert service_name("--api") == "api"
    assert service_name("ünïcode") == "n-code"
    assert service_name("!!!") == "unknown"
    assert len(service_name("a" * 500)) == 100


def test_fingerprint_ignores_label_order():
    one = fingerprint_of({"alertname": "X", "job": "api"})
    assert one == fingerprint_of({"job": "api", "alertname": "X"})
    assert one != fingerprint_of({"alertname": "X", "job": "web"})
    assert len(one) == 32


def test_zero_times_mean_none_and_naive_times_are_utc():
    assert moment(datetime(1, 1, 1, tzinfo=UTC)) is None
    assert moment(None) is None
    assert moment(datetime(2026, 12, 1, 10, 0)) == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def received(**fields) -> ReceivedAlert:
    base = {"source": "alertmanager", "fingerprint": "abc", "status": "firing", "labels": {"alertname": "HighLatency"}}
    return ReceivedAlert(**{**base, **fields})


def test_titles_descriptions_and_messages():
    alert = received(
        labels={"alertname": "HighLatency", "job": "api", "instance": "10.0.0.1:80"},
        annotations={"description": "p99 over 2s", "runbook_url": "https://runbooks/latency"},
        generator_url="http://prometheus/graph",
        starts_at=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
    )
    assert alert_title(alert) == "HighLatency (instance=10.0.0.1:80, job=api)"
    assert alert_title(received(annotations={"summary": "  API   is slow \n"})) == "API is slow"
    assert len(alert_title(received(annotations={"summary": "x" * 500}))) == 200
    assert alert_title(received(labels={"env": "prod"})) == "alert (env=prod)"
    description = alert_description(alert)
    assert description.startswith("p99 over 2s\n\nRunbook: https://runbooks/latency\n\nSource: http://prometheus/graph")
    assert "  instance=10.0.0.1:80\n  job=api" in description
    message = firing_message(alert, again=False)
    assert message.splitlines()[0] == "alert HighLatency firing since 2026-12-01T10:00:00+00:00 (alertmanager, abc)"
    assert "  job=api" in message and "  runbook_url: https://runbooks/latency" in message
    assert "firing again" in firing_message(alert, again=True)
    at = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    assert resolved_message(alert, at) == "alert HighLatency resolved at 2026-12-01T11:00:00+00:00 (alertmanager, abc)"
