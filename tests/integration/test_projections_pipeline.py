"""Store → relay → Kafka → projector → read models, with real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eventstore.postgres import PostgresEventStore
from projections import queries
from projections.handlers import default_projections
from projections.models import recompute_analytics
from projections.rebuild import rebuild
from projections.runner import projector_lag, run_projector
from projections.verify import dump_read_models, verify_against_rebuild
from sagaflow.settings import Settings
from streaming.kafka import quiet_kafka_logs
from streaming.relay import relay_lag, run_relay
from streaming.workload import background, register_products, run_orders, wait_for

pytestmark = pytest.mark.integration

SKUS = ["apple", "bread", "chair", "drill"]


def settings_for_test(settings: Settings, database_url: str, unique: str) -> Settings:
    """Settings of one test: its own database, topic, dead-letter topic and group."""
    quiet_kafka_logs()
    logging.getLogger("sagaflow").setLevel(logging.ERROR)
    return settings.model_copy(
        update={
            "database_url": database_url,
            "kafka_topic": f"events-{unique}",
            "kafka_dead_letter_topic": f"dlt-{unique}",
            "projector_group": f"projector-{unique}",
            "kafka_partitions": 3,
            "projector_backoff_initial_s": 0.05,
        }
    )


@pytest.fixture
def stream_settings(settings: Settings, database_url: str, kafka_bootstrap: str, unique: str):
    """Settings of one test: its own database, topic, dead-letter topic and group."""
    return settings_for_test(settings, database_url, unique)


async def caught_up(store: PostgresEventStore, settings: Settings) -> bool:
    """True when the relay and the read models have every event of the store."""
    relay = await relay_lag(store, settings.relay_name)
    return relay.events == 0 and (await projector_lag(store, settings)).events == 0


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
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings.model_copy(update={"kafka_enabled": False})
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


async def test_embedded_mode_builds_the_same_read_models_as_kafka_mode(
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 100, prefix="em-", skus=SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        await wait_for(lambda: caught_up(pg_store, s), what="Kafka mode", watch=projector)
    projections = default_projections()
    via_kafka = await dump_read_models(pg_store.pool, projections)

    tables = [t for p in projections for t in p.tables]
    async with pg_store.pool.connection() as conn:
        await conn.execute(
            "TRUNCATE projection_watermarks, " + ", ".join(tables)  # names are our own
        )
    embedded = s.model_copy(update={"kafka_enabled": False})
    async with background(lambda stop: run_projector(embedded, stop)) as projector:
        await wait_for(lambda: _lag_zero(pg_store, s), what="embedded mode", watch=projector)
    assert await dump_read_models(pg_store.pool, projections) == via_kafka
    assert sum(len(rows) for rows in via_kafka.values()) > 300
