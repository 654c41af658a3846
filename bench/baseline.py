"""The minimum Temporal round trip: a workflow running one no-op activity (the benchmark's baseline)."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop(_: str) -> str:
    return "ok"


@workflow.defn(name="BaselineWorkflow")
class BaselineWorkflow:
    @workflow.run
    async def run(self, arg: str) -> str:
        return await workflow.execute_activity(noop, arg, start_to_close_timeout=timedelta(seconds=10))
