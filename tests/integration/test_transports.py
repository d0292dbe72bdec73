"""The transport port's promises: gaps healed from the store, read models added later,
three projectors sharing RabbitMQ's shards in order, integration subscribers."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import RecordsToDelete

from bench.workload import background, register_products, run_orders, wait_for
from eventstore.postgres import PostgresEventStore
from projections import queries
from projections.deadletters import list_dead_letters
from projections.engine import Projector
from projections.handlers import default_projections
from projections.runner import follow, open_pool, run_projector
from projections.verify import verify_against_rebuild
from sagaflow.clients import connect_rabbitmq
from sagaflow.settings import Settings
from streaming.kafka import admin_client, consumer_client
from streaming.relay import run_relay
from streaming.subscribe import run_subscriber, webhook_sink
from tests.integration.streaming_support import SKUS, caught_up, drain_queue, transport_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one Kafka test."""
    return transport_settings(request, "kafka")


@pytest.fixture
def rabbit_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one RabbitMQ test."""
    return transport_settings(request, "rabbitmq")


async def _bootstrapped(store: PostgresEventStore, count: int) -> bool:
    async with store.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM projection_bootstraps")
        row = await cur.fetchone()
    return row is not None and row[0] >= count


async def _produce(settings: Settings, messages: Sequence[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(settings.kafka_topic, value, key=key.encode())
    finally:
        await producer.stop()


async def _counter(store: PostgresEventStore, name: str) -> int:
    async with store.pool.connection() as conn:
        cur = await conn.execute("SELECT value FROM projection_counters WHERE name = %s", (name,))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_a_version_gap_is_healed_from_the_store_and_one_the_store_cannot_fill_is_dead_lettered(  # noqa: E501
    kafka_settings: Settings, pg_store: PostgresEventStore
):
    s = kafka_settings
    async with background(lambda stop: run_projector(s, stop)) as projector:
        await wait_for(lambda: _bootstrapped(pg_store, 6), what="projector", watch=projector)
        # the store has the whole order; the wire carries only its last event (a gap)
        await register_products(pg_store, SKUS)
        await run_orders(pg_store, 1, prefix="gap-", skus=SKUS)
        stream = await pg_store.read_stream("order-gap-0")
        assert len(stream) >= 3
        last = stream[-1].envelope()
        ghost = {
            **stream[0].envelope(),
            "event_id": str(uuid.uuid4()),
            "stream_id": "order-ghost",
            "version": 2,
        }
        await _produce(s, [("order-gap-0", json.dumps(last).encode())])

        async def healed() -> bool:
            summary = await queries.get_order_summary(pg_store.pool, "gap-0")
            return summary is not None and summary.version == len(stream)

        await wait_for(healed, what="the gap healed", watch=projector)
        await _produce(s, [("order-ghost", json.dumps(ghost).encode())])

        async def one_letter() -> bool:
            return len(await list_dead_letters(pg_store.pool)) == 1

        await wait_for(one_letter, what="the unhealable gap dead-lettered", watch=projector)
        assert not projector.done()

    assert await _counter(pg_store, "gaps_healed") == 1
    assert await _counter(pg_store, "gap_events_healed") == len(stream) - 1
    (letter,) = await list_dead_letters(pg_store.pool)
    assert (letter.stream_id, letter.version, letter.handler) == ("order-ghost", 2, "gap")
    assert "gap: expected v1, got v2" in letter.error
    assert await queries.get_order_summary(pg_store.pool, "ghost") is None, "never skipped"


async def test_a_read_model_added_after_the_topics_early_records_are_gone_ends_equal_to_a_rebuild(
    kafka_settings: Settings, pg_store: PostgresEventStore
):
    s = kafka_settings
    everything = default_projections()
    first = [p for p in everything if p.name != "product_sales"]
    await register_products(pg_store, SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop, projections=first)) as projector,
    ):
        await run_orders(pg_store, 40, prefix="early-", skus=SKUS)
        await wait_for(lambda: caught_up(pg_store, s), what="first run", watch=projector)

    # retention removed every record so far (delete_records is what retention does)
    consumer = consumer_client(s, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(s.kafka_topic, p) for p in range(s.kafka_partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    admin = admin_client(s)
    await admin.start()
    try:
        await admin.delete_records(
            {tp: RecordsToDelete(end) for tp, end in ends.items()}, timeout_ms=15_000
        )
    finally:
        await admin.close()

    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop, projections=everything)) as projector,
    ):
        await run_orders(pg_store, 20, prefix="late-", skus=SKUS, seed=9)
        await wait_for(lambda: caught_up(pg_store, s), what="second run", watch=projector)

    sold = {p.sku: p.units for p in await queries.product_sales(pg_store.pool)}
    assert sum(sold.values()) > 0, "the new read model holds the early orders too"
    live, rebuilt = await verify_against_rebuild(pg_store, everything)
    assert live == rebuilt


async def _member(settings: Settings, stop: asyncio.Event) -> Projector:
    assert settings.database_url
    pool = await open_pool(settings.database_url, migrate=False, max_size=4)
    store = await PostgresEventStore.connect(settings.database_url, migrate=False, max_size=2)
    try:
        return await follow(settings, store, pool, default_projections(), stop)
    finally:
        await store.close()
        await pool.close()


async def test_three_projectors_share_rabbitmq_shards_and_keep_every_streams_order(
    rabbit_settings: Settings, pg_store: PostgresEventStore
):
    s = rabbit_settings.model_copy(update={"rabbitmq_shards": 6, "projector_batch_size": 200})
    await register_products(pg_store, SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: _member(s, stop)) as a,
        background(lambda stop: _member(s, stop)) as b,
        background(lambda stop: _member(s, stop)) as c,
    ):
        await asyncio.sleep(2.5)  # every member joined and took its shards
        await run_orders(pg_store, 150, prefix="o-", skus=SKUS)
        await wait_for(lambda: caught_up(pg_store, s), what="three projectors", watch=a)
    projectors: list[Any] = [a.result(), b.result(), c.result()]
    applied = [p.stats.applied for p in projectors]
    assert all(n > 0 for n in applied), f"every projector took a share: {applied}"
    # Why gaps prove order: a stream's event delivered before its predecessor would
    # be a gap (healed, and counted); none means every stream arrived in order.
    assert [p.stats.gaps for p in projectors] == [0, 0, 0]
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def test_a_subscriber_receives_exactly_the_events_matching_its_pattern(
    rabbit_settings: Settings, pg_store: PostgresEventStore, unique: str
):
    s = rabbit_settings
    received: list[dict[str, Any]] = []

    async def sink(envelope: dict[str, Any]) -> None:
        received.append(envelope)

    ready = asyncio.Event()
    async with background(
        lambda stop: run_subscriber(s, "Order.*", f"sub-{unique}", sink, stop, ready=ready)
    ) as subscriber:
        await asyncio.wait_for(ready.wait(), 30)
        await register_products(pg_store, SKUS)
        await run_orders(pg_store, 15, prefix="s-", skus=SKUS)
        feed = await pg_store.read_feed(limit=100_000)
        expected = [str(e.event_id) for e in feed if e.stream_type == "Order"]
        async with background(lambda stop: run_relay(s, stop)):

            async def all_received() -> bool:
                return len(received) >= len(expected)

            await wait_for(all_received, what="subscriber", watch=subscriber)
            await asyncio.sleep(0.5)  # nothing more arrives
    assert [e["event_id"] for e in received] == expected
    assert {e["stream_type"] for e in received} == {"Order"}
    assert len(expected) < len(feed), "other stream types were published and not received"


class _Hook(http.server.BaseHTTPRequestHandler):
    """Answers 500 to the first two POSTs, then 200; keeps what it accepted."""

    posts: list[dict[str, Any]] = []
    failures_left = 2

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Hook.failures_left > 0:
            _Hook.failures_left -= 1
            self.send_response(500)
        else:
            _Hook.posts.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_webhook_subscriber_retries_a_failing_post_and_dead_letters_what_is_not_an_envelope(
    rabbit_settings: Settings, pg_store: PostgresEventStore, unique: str
):
    s = rabbit_settings.model_copy(update={"subscriber_backoff_initial_s": 0.05})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    ready = asyncio.Event()
    queue = f"hook-{unique}"
    try:
        async with background(
            lambda stop: run_subscriber(
                s, "Inventory.#", queue, webhook_sink(url), stop, ready=ready
            )
        ) as subscriber:
            await asyncio.wait_for(ready.wait(), 30)
            await register_products(pg_store, ["kiwi"])
            connection = await connect_rabbitmq(s)
            try:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(s.rabbitmq_exchange)
                await exchange.publish(
                    aio_pika.Message(b"not json at all"), routing_key="Inventory.Junk"
                )
            finally:
                await connection.close()
            async with background(lambda stop: run_relay(s, stop)):

                async def both_posted() -> bool:
                    return len(_Hook.posts) >= 2

                await wait_for(both_posted, what="webhook", watch=subscriber)
                await asyncio.sleep(0.3)
    finally:
        server.shutdown()
    feed = await pg_store.read_feed(limit=100)
    assert [p["event_id"] for p in _Hook.posts] == [str(e.event_id) for e in feed]
    (dead,) = await drain_queue(s, f"{queue}.dead")
    assert dead.body == b"not json at all"
    assert "not a sagaflow event envelope" in str(dead.headers["x-sagaflow-error"])
