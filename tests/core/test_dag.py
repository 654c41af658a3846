"""The pure scheduler, without Temporal."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.dag import StepFacts, outcome, plan
from core.playbook import (
    JoinSpec,
    Playbook,
    PlaybookError,
    StepSpec,
    check_agents,
    default_playbook,
    substitute,
)


def book(*steps: StepSpec, parallel: bool = True) -> Playbook:
    return Playbook(id="t", name="t", steps=list(steps), parallel=parallel)


def s(step_id: str, *deps: str, **kw) -> StepSpec:
    return StepSpec(id=step_id, agent="noop", depends_on=list(deps), **kw)


def facts(playbook: Playbook, **statuses: str) -> dict[str, StepFacts]:
    return {step.id: StepFacts(statuses.get(step.id, "pending")) for step in playbook.steps}


FAN = book(
    s("monitor"),
    s("logs", "monitor"),
    s("metrics", "monitor"),
    s("deps", "monitor"),
    s("join", "logs", "metrics", "deps"),
)


def test_chain_starts_one_step_after_another():
    chain = default_playbook()
    assert plan(chain, facts(chain)).start == ["monitor"]
    assert plan(chain, facts(chain, monitor="running")).empty()
    assert plan(chain, facts(chain, monitor="completed")).start == ["investigate"]


def test_parallel_branches_start_together_and_join_waits_for_all():
    assert plan(FAN, facts(FAN, monitor="completed")).start == ["logs", "metrics", "deps"]
    assert plan(FAN, facts(FAN, monitor="completed", logs="completed", metrics="running", deps="completed")).empty()
    done = facts(FAN, monitor="completed", logs="completed", metrics="completed", deps="completed")
    assert plan(FAN, done).start == ["join"]


def test_sequential_fallback_runs_one_at_a_time_in_order():
    sequential = FAN.model_copy(update={"parallel": False})
    assert plan(sequential, facts(sequential, monitor="completed")).start == ["logs"]
    assert plan(sequential, facts(sequential, monitor="completed", logs="running")).start == []


def test_first_success_starts_on_the_first_and_cancels_running_losers():
    race = book(
        s("a", on_failure="continue"),
        s("b"),
        s("c"),
        s("pick", "a", "b", "c", join=JoinSpec(strategy="first_success")),
    )
    result = plan(race, facts(race, a="running", b="completed", c="running"))
    assert result.start == ["pick"]
    assert set(result.cancel) == {"a", "c"}
    failed_all = plan(race, facts(race, a="failed", b="skipped", c="cancelled"))
    assert "only 0 succeeded" in failed_all.fail["pick"]
    # A dependency that halted (on_failure=fail) may still succeed after a retry: the join waits.
    strict = book(s("a"), s("b", on_failure="continue"), s("pick", "a", "b", join=JoinSpec(strategy="first_success")))
    assert plan(strict, facts(strict, a="failed", b="failed")).empty()


def test_at_least_n_proceeds_after_n():
    two = book(s("a"), s("b"), s("c"), s("enough", "a", "b", "c", join=JoinSpec(strategy="at_least", count=2)))
    assert plan(two, facts(two, a="completed", b="running", c="running")).start == []
    result = plan(two, facts(two, a="completed", b="running", c="completed"))
    assert result.start == ["enough"] and list(result.cancel) == ["b"]


def test_on_failure_semantics():
    for mode, expect in (("continue", "start"), ("skip_dependents", "skip"), ("fail", "wait")):
        playbook = book(s("a", on_failure=mode), s("b", "a"), s("c", "b"))
        result = plan(playbook, facts(playbook, a="failed"))
        if expect == "start":
            assert result.start == ["b"]
        elif expect == "skip":
            assert result.skip == {"b": "dependency a did not succeed"}
        else:
            assert result.empty()
            assert outcome(playbook, facts(playbook, a="failed")) == "halted"


def test_skip_spreads_downstream_but_a_condition_skip_does_not():
    playbook = book(s("a"), s("b", "a"), s("c", "b"))
    spread = facts(playbook, a="completed", b="skipped")
    spread["b"].skip_spreads = True
    assert plan(playbook, spread).skip == {"c": "dependency b did not succeed"}
    by_condition = facts(playbook, a="completed", b="skipped")
    assert plan(playbook, by_condition).start == ["c"]


def test_outcome():
    chain = default_playbook()
    assert outcome(chain, facts(chain, monitor="running")) is None
    done = facts(chain, monitor="completed", investigate="completed", remediate="skipped", verify="completed")
    assert outcome(chain, done) == "completed"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([s("a"), s("a")], "step a: duplicate id"),
        ([s("a", "ghost")], "step a: depends on unknown step 'ghost'"),
        ([s("a", "b"), s("b", "a")], "dependency cycle"),
        ([s("a", "a")], "step a: depends on itself"),
        ([s("a", when="steps.x ==")], "step a: condition does not parse"),
        ([s("a"), s("b", "a", join=JoinSpec(strategy="first_success"))], "step b: join first_success needs"),
        (
            [s("a"), s("b"), s("j", "a", "b", join=JoinSpec(strategy="at_least", count=3))],
            "step j: join at_least 3",
        ),
    ],
)
def test_invalid_playbooks_name_the_step(steps, message):
    with pytest.raises(ValidationError, match=message):
        book(*steps)


def test_unknown_agents_are_named():
    with pytest.raises(PlaybookError, match="step a: unknown agent 'noop'"):
        check_agents(book(s("a")), {"monitor"})


def test_substitution_is_text_only():
    params = {"argv": ["systemctl", "restart", "${incident.service}"], "note": "{{ 7*7 }} ${nope}", "n": 3}
    assert substitute(params, {"incident.service": "api"}) == {
        "argv": ["systemctl", "restart", "api"],
        "note": "{{ 7*7 }} ${nope}",
        "n": 3,
    }


def test_a_steps_lineage_is_itself_and_what_it_depends_on():
    from core.dag import lineage

    playbook = Playbook.model_validate({"id": "p", "name": "p", "steps": [
        {"id": "root", "agent": "noop"},
        {"id": "a", "agent": "noop", "depends_on": ["root"]},
        {"id": "b", "agent": "noop", "depends_on": ["root"]},
        {"id": "a2", "agent": "noop", "depends_on": ["a"]},
        {"id": "join", "agent": "noop", "depends_on": ["a2", "b"]},
    ]})  # fmt: skip
    assert lineage(playbook, "a2") == ["root", "a", "a2"]
    assert lineage(playbook, "b") == ["root", "b"]
    assert lineage(playbook, "join") == ["root", "a", "b", "a2", "join"]


def test_a_repeat_cannot_need_more_passes_than_it_has_checks():
    import pytest
    from pydantic import ValidationError

    from core.playbook import RepeatSpec

    assert RepeatSpec(count=3, passes=2).passes == 2
    with pytest.raises(ValidationError, match=r"passes \(4\) cannot be more than count \(3\)"):
        RepeatSpec(count=3, passes=4)
