"""The bare baselines the benchmarks compare against: the minimum Temporal cost of a 4-step chain (a workflow
running 4 no-op activities in sequence) and of a decision (an Update that only records it). Their worker can
run in a process of its own: bench/bare_worker.py."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bare_noop")
async def bare_noop(_: str) -> str:
    return "ok"


@workflow.defn(name="BareChainWorkflow")
class BareChainWorkflow:
    @workflow.run
    async def run(self, arg: str) -> str:
        for _ in range(4):
            arg = await workflow.execute_activity(bare_noop, arg, start_to_close_timeout=timedelta(seconds=10))
        return arg


@workflow.defn(name="BareUpdateWorkflow")
class BareUpdateWorkflow:
    """The minimum cost of a decision: an Update whose handler only records it, then the run goes on."""

    def __init__(self) -> None:
        self._decided = False

    @workflow.run
    async def run(self, _: str) -> str:
        await workflow.wait_condition(lambda: self._decided)
        return "decided"

    @workflow.update(name="decide")
    def decide(self, _decision: str) -> str:
        """Returns when the workflow resumed with the decision: the start of this workflow task."""
        self._decided = True
        return workflow.now().isoformat()
