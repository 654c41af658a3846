"""The rule that moves a service's state on by one check result (flap protection), and check scheduling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.monitoring import Thresholds, Tracked, advance, next_due, spread

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def run(results: str, limits: Thresholds, state: Tracked | None = None) -> tuple[Tracked, list[str | None]]:
    """Feed results ('u' up, 'd' down, 'g' degraded), one a second; the final state and each transition."""
    state = state or Tracked()
    transitions = []
    kinds = {"u": "up", "d": "down", "g": "degraded"}
    for i, r in enumerate(results):
        state, transition = advance(state, kinds[r], T0 + timedelta(seconds=i), limits)  # type: ignore[arg-type]
        transitions.append(transition)
    return state, transitions


def test_failures_below_the_threshold_never_start_an_outage() -> None:
    state, transitions = run("ududdudd", Thresholds(failure_threshold=3))
    assert transitions == [None] * 8
    assert state.status == "up" and state.episode == 0 and state.consecutive_failures == 2


def test_the_threshold_th_failure_in_a_row_starts_one_outage() -> None:
    state, transitions = run("uddddd", Thresholds(failure_threshold=3))
    assert transitions == [None, None, None, "outage", None, None]
    assert state.status == "down" and state.episode == 1 and state.consecutive_failures == 5
    assert state.failing_since == T0 + timedelta(seconds=1)  # the first failure of the streak


def test_recovery_needs_recovery_threshold_passes_in_a_row() -> None:
    limits = Thresholds(failure_threshold=2, recovery_threshold=3)
    state, transitions = run("ddduuduuu", limits)
    assert transitions == [None, "outage", None, None, None, None, None, None, "recovered"]
    assert state.status == "up" and state.failing_since is None and state.consecutive_passes == 3


def test_each_outage_is_a_new_episode_with_no_incident_yet() -> None:
    limits = Thresholds(failure_threshold=1)
    state, _ = run("d", limits)
    state = Tracked(**{**vars(state), "incident_id": 42})
    state, transitions = run("udd", limits, state)
    assert transitions == ["recovered", "outage", None]
    assert state.episode == 2 and state.incident_id is None


def test_degraded_counts_as_a_pass_but_is_shown() -> None:
    state, transitions = run("dgg", Thresholds(failure_threshold=1, recovery_threshold=2))
    assert transitions == ["outage", None, "recovered"] and state.status == "degraded"
    state, _ = run("ug", Thresholds())
    assert state.status == "degraded"


def test_next_check_keeps_the_schedule_and_spreads_after_a_stop() -> None:
    due = T0
    assert next_due(due, 60, T0 + timedelta(seconds=2), 7) == T0 + timedelta(seconds=60)  # no drift from lag
    late = T0 + timedelta(hours=1)  # the monitor was stopped for an hour
    following = next_due(due, 60, late, 7)
    assert late <= following < late + timedelta(seconds=60)
    firsts = sorted(spread(i, 60) for i in range(1000))
    assert 0 <= firsts[0] and firsts[-1] < 60
    # Evenly spread: no second of the minute gets more than a few dozen of a thousand first checks.
    per_second = [sum(1 for f in firsts if s <= f < s + 1) for s in range(60)]
    assert max(per_second) < 40 and min(per_second) > 0
