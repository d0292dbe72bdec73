"""The benchmark's baseline: a bare Temporal workflow running four no-op activities."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop(step: int) -> int:
    """Does nothing (the baseline measures Temporal alone)."""
    return step


@workflow.defn(name="BareFourActivities")
class BareFourActivities:
    """Four sequential no-op activities with default options."""

    @workflow.run
    async def run(self, n: int) -> int:
        """Run the four activities."""
        for step in range(4):
            await workflow.execute_activity(
                noop, step, start_to_close_timeout=timedelta(seconds=10)
            )
        return n
