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


BARE_SCHEMA = "CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, key text)"
"""The table of ``RowInserter``'s rows."""


class RowInserter:
    """The bare workflow's one side effect per step: one INSERT on PostgreSQL."""

    def __init__(self, pool: object) -> None:
        self.pool = pool

    @activity.defn(name="bench_insert_row")
    async def insert_row(self, key: str) -> int:
        """One INSERT of ``key`` into ``bench_rows`` (one round trip, autocommit)."""
        async with self.pool.connection() as conn:  # type: ignore[attr-defined]
            await conn.execute("INSERT INTO bench_rows (key) VALUES (%s)", (key,))
        return 1


@workflow.defn(name="BareFourLocalInserts")
class BareFourLocalInserts:
    """Four sequential local activities, each one INSERT: Temporal plus PostgreSQL alone."""

    @workflow.run
    async def run(self, key: str) -> int:
        """Run the four inserts."""
        done = 0
        for step in range(4):
            done += await workflow.execute_local_activity(
                "bench_insert_row",
                f"{key}/{step}",
                result_type=int,
                start_to_close_timeout=timedelta(seconds=10),
            )
        return done
