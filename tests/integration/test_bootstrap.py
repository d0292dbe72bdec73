"""Bootstrapping read models from the event store: once, not at every start."""

from __future__ import annotations

import pytest

from bench.workload import register_products, run_orders
from eventstore.postgres import PostgresEventStore
from projections.handlers import OrderSummaryProjection, ReturnSummaryProjection
from projections.runner import bootstrap_projections, needs_bootstrap, open_pool
from streaming.transport import make_subscriber
from tests.integration.streaming_support import SKUS, transport_settings

pytestmark = pytest.mark.integration


async def test_a_read_model_with_no_events_yet_bootstraps_once(
    request: pytest.FixtureRequest, pg_store: PostgresEventStore
) -> None:
    settings = transport_settings(request, "embedded")
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 5, prefix="boot-", skus=SKUS, concurrency=2)
    assert settings.database_url
    pool = await open_pool(settings.database_url, migrate=False)
    try:
        async with pool.connection() as conn:
            # The group has a position already, so the feed will not replay from the
            # start and new read models must be caught up from the store.
            await conn.execute(
                "INSERT INTO projection_feed_checkpoints (consumer, epoch, tx_id, position) "
                "VALUES (%s, 1, 1, 1)",
                (settings.projector_group,),
            )
        # No return has happened: return_summary has nothing to apply.
        chosen = [OrderSummaryProjection(), ReturnSummaryProjection()]
        subscriber = make_subscriber(settings, pool, pg_store)
        assert sorted(await needs_bootstrap(pool, chosen)) == ["order_summary", "return_summary"]
        read = await bootstrap_projections(settings, pg_store, pool, chosen, subscriber)
        assert read > 0
        assert await needs_bootstrap(pool, chosen) == []
        # The next start reads nothing (before, return_summary read the whole feed).
        assert await bootstrap_projections(settings, pg_store, pool, chosen, subscriber) == 0
        async with pool.connection() as conn:
            await conn.execute(
                "DELETE FROM projection_watermarks WHERE projection = 'return_summary'"
            )
        # Positions lost are still seen as lost.
        assert await needs_bootstrap(pool, chosen) == ["return_summary"]
    finally:
        await pool.close()
