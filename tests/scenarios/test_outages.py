"""One outage, one incident, on real processes: a dependency killed (its victim's incident linked to it, only the
dependency restarted), a flapping service (one incident, reopened, restarts capped by the remediation budget), an
alert re-sent five times (one incident, open while it fires, resolved by its resolution), and a slow service
(degraded, no incident)."""

from __future__ import annotations

import pytest

from tests.scenarios.harness import RESTART_WHEN
from tests.scenarios.outages import ALERT_REPEATS, DEGRADED_MS
from tests.scenarios.scenarios import Play

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def test_a_killed_dependency_is_restarted_and_its_victims_incident_is_linked_not_restarted(play: Play) -> None:
    outcome = await play("dependency_killed")
    facts = outcome.facts
    assert outcome.workflow == "completed" and outcome.status == "resolved", outcome.timeline
    assert outcome.incidents == 2  # one per outage: shop-db's and shop's
    assert outcome.steps["restart"]["approval"]["decided_by"] == "ann"
    assert "shop-db: restarted" in outcome.steps["restart"]["output"]["data"]["stdout"]
    assert outcome.restarts == 1  # shop-db, once
    # shop failed through shop-db: its run saw the broken dependency and did not restart shop.
    assert facts["victim_deps"]["broken"] == ["shop-db"]
    assert facts["victim_restart"]["note"] == f"condition is false: {RESTART_WHEN}"
    assert facts["victim_approvals"] == []  # nobody was asked to restart shop
    assert facts["victim_starts"] == 0  # shop's start counter did not move
    assert facts["victim_steps"]["verify"]["status"] == "completed"
    assert (facts["victim_workflow"], facts["victim_status"]) == ("completed", "resolved")
    assert [(link["kind"], link["incident_id"]) for link in facts["victim_links"]] == [
        ("caused_by", facts["cause_incident"])
    ]
    assert [(link["kind"], link["incident_id"]) for link in facts["cause_links"]] == [
        ("causes", facts["victim_incident"])
    ]
    assert outcome.cause is not None and outcome.cause.startswith("deps: ") and "shop-db" in outcome.cause


async def test_a_flapping_service_is_one_incident_reopened_and_restarted_at_most_the_budget(play: Play) -> None:
    outcome = await play("flapping")
    facts = outcome.facts
    assert outcome.incidents == 1, outcome.timeline
    assert 1 <= outcome.restarts <= facts["budget"] == 3  # REMEDIATION_BUDGET's default
    assert outcome.restarts == facts["budget"]  # each run's restart ran until the budget was spent
    assert len(facts["reopens"]) >= 1 and all(r["actor"] == "monitor" for r in facts["reopens"])
    assert sum("resolved → reopened by monitor" in line for line in outcome.timeline) == len(facts["reopens"])
    assert any("after this incident was resolved" in (r.get("comment") or "") for r in facts["reopens"])
    restart = outcome.steps["restart"]
    assert restart["status"] == "failed"
    # Rejected by the budget when it asked, not after the approver said yes: nobody was asked to approve it.
    assert restart["error"].startswith("not run: approval rejected by policy:remediation-budget: ")
    assert "remediation budget spent: 3 automatic remediations of incident" in restart["error"]
    assert facts["approved"] == facts["budget"] and len(facts["refused_by_budget"]) == 1
    assert outcome.status not in ("resolved", "closed")  # a person decides now
    # The flaps after that joined the open incident: no new incident, no restart, nobody asked to approve one.
    assert outcome.restarts == facts["restarts_when_spent"] and facts["asked_after_budget"] == []
    assert len(facts["joined_after_budget"]) >= 1, outcome.timeline
    assert outcome.verified_s is not None  # the first run's verify passed, in a passing phase


async def test_an_alert_re_sent_five_times_is_one_incident_open_until_its_resolution(play: Play) -> None:
    outcome = await play("alert_repeats")
    facts = outcome.facts
    answers = facts["answers"]
    assert [a["action"] for a in answers] == ["opened"] + ["attached"] * (ALERT_REPEATS - 1) + ["resolved"]
    assert len({a["incident_id"] for a in answers}) == 1
    assert outcome.workflow == "completed"  # nothing to fix from here
    assert "resolved" not in facts["while_firing"], facts["while_firing"]
    assert (outcome.status, outcome.incidents, outcome.restarts) == ("resolved", 1, 0)
    assert facts["alert_events"][0] == "alert.firing" and "alert.resolved" in facts["alert_events"]


async def test_a_slow_service_is_degraded_and_opens_no_incident(play: Play) -> None:
    outcome = await play("slow_degraded")
    facts = outcome.facts
    assert facts["seen"] == ["degraded"]
    assert facts["state"]["last_error"].startswith("slow: answered in ")
    assert facts["state"]["last_error"].endswith(f"ms (degraded above {DEGRADED_MS} ms)")
    assert (outcome.incidents, outcome.restarts) == (0, 0)
    for name, lag in facts["lag"].items():  # each check at its time: the slow one delays none
        assert lag["checks"] >= 4 and lag["max_gap_s"] < 1.5, f"{name}: {lag}\n{facts.get('ticks', '')}"
    assert facts["lag"]["shop"]["statuses"] == ["degraded"] and facts["lag"]["shop-db"]["statuses"] == ["up"]
