"""Store → relay → transport → projector → read models, over Kafka and RabbitMQ."""

from __future__ import annotations

import asyncio

import pytest

from bench.workload import background, register_products, run_orders, wait_for
from eventstore.postgres import PostgresEventStore
from projections import queries
from projections.handlers import default_projections
from projections.models import recompute_analytics
from projections.rebuild import rebuild
from projections.runner import projector_lag, run_projector
from projections.verify import dump_read_models, verify_against_rebuild
from sagaflow.settings import Settings
from streaming.relay import run_relay
from tests.integration.streaming_support import (
    BROKERS,
    SKUS,
    caught_up,
    settings_for_test,
    transport_settings,
)

pytestmark = pytest.mark.integration

__all__ = ["SKUS", "caught_up", "settings_for_test"]


@pytest.fixture(params=BROKERS)
def stream_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one test on each broker: its own database, topic / exchange, group."""
    return transport_settings(request, request.param)


async def test_appended_events_reach_every_read_model_and_analytics_equal_a_recomputation(
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings
    written = await register_products(pg_store, SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)) as relay,
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        written += await run_orders(pg_store, 120, prefix="e2e-", skus=SKUS)
        await wait_for(lambda: caught_up(pg_store, s), what="read models", watch=projector)
        assert not relay.done()

    pairs = [(r, pg_store.decode(r)) for r in await pg_store.read_feed(limit=100_000)]
    assert len(pairs) == written
    days, products = recompute_analytics(pairs)
    daily = await queries.daily_sales(pg_store.pool)
    assert {d.day: (d.orders, d.revenue_cents, d.cancellations, d.refunds) for d in daily} == {
        day: (x.orders, x.revenue_cents, x.cancellations, x.refunds) for day, x in days.items()
    }
    by_sku = {p.sku: (p.units, p.revenue_cents) for p in await queries.product_sales(pg_store.pool)}
    assert by_sku == {sku: (p.units, p.revenue_cents) for sku, p in products.items()}

    order = await queries.get_order_summary(pg_store.pool, "e2e-0")
    assert order is not None and order.version == await pg_store.stream_version("order-e2e-0")
    assert order.status in ("delivered", "cancelled") and "created_at" in order.timeline
    mine = await queries.list_customer_orders(pg_store.pool, order.customer_id)
    assert "e2e-0" in {o.order_id for o in mine}
    stock = await queries.get_inventory_level(pg_store.pool, "apple")
    assert stock is not None and stock.available + stock.reserved + stock.sold == 1_000_000
    assert stock.reserved == 0  # every reservation was sold or released
    counts = await queries.saga_outcome_counts(pg_store.pool)
    (order_sagas,) = counts
    assert order_sagas.completed + order_sagas.compensated + order_sagas.parked == 120
    assert order_sagas.compensated > 0 and order_sagas.completed > 0

    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def test_rebuild_swaps_in_a_fresh_table_while_queries_keep_answering(
    settings: Settings, database_url: str, unique: str, pg_store: PostgresEventStore
):
    s = settings_for_test(settings, database_url, unique, "embedded")
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 80, prefix="rb-", skus=SKUS)
    async with background(lambda stop: run_projector(s, stop)) as projector:
        await wait_for(lambda: _lag_zero(pg_store, s), what="embedded projector", watch=projector)
    summary = default_projections()[0]
    before = await dump_read_models(pg_store.pool, [summary])
    async with pg_store.pool.connection() as conn:
        await conn.execute("UPDATE order_summary SET status = 'corrupted' WHERE order_id = 'rb-1'")

    answers: list[int] = []
    progress: list[tuple[int, int]] = []

    async def keep_querying(stop: asyncio.Event) -> None:
        while not stop.is_set():
            found = await queries.get_order_summary(pg_store.pool, "rb-2")
            assert found is not None
            answers.append(found.version)
            await asyncio.sleep(0.005)

    async with background(keep_querying):
        await rebuild(
            pg_store, summary, batch_size=100, progress=lambda d, t: progress.append((d, t))
        )
    assert await dump_read_models(pg_store.pool, [summary]) == before
    assert len(answers) > 3, "queries kept answering during the rebuild"
    assert len(progress) > 3 and progress[-1][0] == progress[-1][1]
    # a second rebuild works too (the copy's index names were given back)
    await rebuild(pg_store, summary)
    assert await dump_read_models(pg_store.pool, [summary]) == before


async def _lag_zero(store: PostgresEventStore, settings: Settings) -> bool:
    return (await projector_lag(store, settings)).events == 0


async def test_embedded_mode_builds_the_same_read_models_as_a_broker(
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 100, prefix="em-", skus=SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        await wait_for(lambda: caught_up(pg_store, s), what="broker", watch=projector)
    projections = default_projections()
    via_kafka = await dump_read_models(pg_store.pool, projections)

    tables = [t for p in projections for t in p.tables]
    async with pg_store.pool.connection() as conn:
        await conn.execute(
            "TRUNCATE projection_watermarks, " + ", ".join(tables)  # names are our own
        )
    embedded = s.with_transport("embedded")
    async with background(lambda stop: run_projector(embedded, stop)) as projector:
        await wait_for(lambda: _lag_zero(pg_store, embedded), what="embedded", watch=projector)
    assert await dump_read_models(pg_store.pool, projections) == via_kafka
    assert sum(len(rows) for rows in via_kafka.values()) > 300
