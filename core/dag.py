"""Pure DAG scheduling for IncidentWorkflow: which steps start, skip, fail or get cancelled next.

No I/O and no clocks, so it is deterministic inside a workflow and unit-tested on its own
(tests/core/test_dag.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.playbook import Playbook, StepSpec

TERMINAL = frozenset({"completed", "failed", "skipped", "cancelled"})


@dataclass
class StepFacts:
    """What the scheduler needs to know about one step's run so far."""

    status: str = "pending"  # pending | running | waiting_approval | completed | failed | skipped | cancelled
    # Skipped because an upstream step failed with on_failure=skip_dependents: the skip spreads downstream.
    skip_spreads: bool = False


@dataclass
class Plan:
    start: list[str] = field(default_factory=list)
    skip: dict[str, str] = field(default_factory=dict)  # step -> reason (spreads downstream)
    fail: dict[str, str] = field(default_factory=dict)  # join that can never be satisfied -> reason
    cancel: dict[str, str] = field(default_factory=dict)  # running loser of a join -> reason

    def empty(self) -> bool:
        return not (self.start or self.skip or self.fail or self.cancel)


def _halts(step: StepSpec, facts: StepFacts) -> bool:
    return facts.status == "failed" and step.on_failure == "fail"


def _blocks(step: StepSpec, facts: StepFacts) -> bool:
    """This dependency's outcome makes its `all`-dependents skip."""
    return (facts.status == "failed" and step.on_failure == "skip_dependents") or (
        facts.status == "skipped" and facts.skip_spreads
    )


def plan(playbook: Playbook, facts: dict[str, StepFacts]) -> Plan:
    """The next moves, given every step's facts. Call again after applying them until it is empty."""
    result = Plan()
    specs = {step.id: step for step in playbook.steps}
    running = [sid for sid, f in facts.items() if f.status in ("running", "waiting_approval")]
    for step in playbook.steps:
        own = facts[step.id]
        if own.status != "pending":
            continue
        deps = [(specs[d], facts[d]) for d in step.depends_on]
        strategy = step.join.strategy
        if strategy == "all":
            if any(_halts(spec, f) for spec, f in deps):
                continue  # waits for a retry of the failed dependency
            blockers = [spec.id for spec, f in deps if _blocks(spec, f)]
            if blockers:
                result.skip[step.id] = f"dependency {blockers[0]} did not succeed"
                continue
            if all(f.status in TERMINAL for _, f in deps):
                result.start.append(step.id)
            continue
        needed = 1 if strategy == "first_success" else (step.join.count or 1)
        successes = [spec.id for spec, f in deps if f.status == "completed"]
        open_deps = [spec.id for spec, f in deps if f.status not in TERMINAL]
        halted = [spec.id for spec, f in deps if _halts(spec, f)]
        if len(successes) >= needed:
            result.start.append(step.id)
            for dep_id in open_deps:
                if facts[dep_id].status == "running":
                    result.cancel[dep_id] = f"join {step.id} already has {len(successes)} of {needed} successes"
        elif len(successes) + len(open_deps) + len(halted) < needed:
            result.fail[step.id] = (
                f"join {strategy} needs {needed} successful dependencies, only {len(successes)} succeeded"
            )
    if not playbook.parallel:
        # Sequential fallback: one step at a time, in playbook order.
        result.start = [] if running else result.start[:1]
    return result


def outcome(playbook: Playbook, facts: dict[str, StepFacts]) -> str | None:
    """When nothing runs and nothing can start: "completed", or "halted" (a failed step awaits a retry)."""
    if any(f.status in ("running", "waiting_approval") for f in facts.values()):
        return None
    if any(_halts(step, facts[step.id]) for step in playbook.steps):
        return "halted"
    if all(f.status in TERMINAL for f in facts.values()):
        return "completed"
    return None


def lineage(playbook: Playbook, step_id: str) -> list[str]:
    """The step and every step it depends on, directly or through others, in playbook order: whose messages its
    agent sees. A parallel branch's sibling is not in it; a join has both branches."""
    specs = {step.id: step for step in playbook.steps}
    seen: set[str] = set()
    todo = [step_id]
    while todo:
        current = todo.pop()
        if current in seen or current not in specs:
            continue
        seen.add(current)
        todo.extend(specs[current].depends_on)
    return [step.id for step in playbook.steps if step.id in seen]
