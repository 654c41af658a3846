"""The minimum Temporal cost of a 4-step chain: a workflow running 4 no-op activities in sequence."""

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
