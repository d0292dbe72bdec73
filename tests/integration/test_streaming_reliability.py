"""The relay under faults on each broker: killed between publish and checkpoint, broker
restarted; and what it puts on the wire."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

import pytest

from bench.workload import background, register_products, run_orders, wait_for
from eventstore.envelope import START
from eventstore.postgres import PostgresEventStore
from projections.handlers import default_projections
from projections.runner import run_projector
from projections.verify import verify_against_rebuild
from sagaflow.services import LocalServices
from sagaflow.settings import Settings
from streaming.kafka import HEADER_FIELDS, read_topic
from streaming.rabbitmq import shard_queue
from streaming.relay import load_checkpoint, relay_lag, run_relay
from tests.integration.relay_fault import FAULT_EXIT_STATUS
from tests.integration.streaming_support import (
    BROKERS,
    SKUS,
    OrderWriter,
    assert_stream_order,
    caught_up,
    declare_audit_queue,
    drain_queue,
    process_env,
    published_event_ids,
    transport_settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=BROKERS)
def stream_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one test on each broker: its own database, topic / exchange, group."""
    return transport_settings(request, request.param)


@pytest.fixture
async def audit(stream_settings: Settings, unique: str) -> str:
    """On RabbitMQ, a queue that copies everything the relay publishes (its name)."""
    name = f"audit-{unique}"
    if stream_settings.transport_kind.value == "rabbitmq":
        await declare_audit_queue(stream_settings, name)
    return name


@pytest.fixture
def kafka_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one Kafka test."""
    return transport_settings(request, "kafka")


@pytest.fixture
def rabbit_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one RabbitMQ test."""
    return transport_settings(request, "rabbitmq")


async def test_relay_publishes_each_event_keyed_by_stream_with_envelope_headers_in_order(
    kafka_settings: Settings, pg_store: PostgresEventStore
):
    s = kafka_settings
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 20, prefix="h-", skus=SKUS)
    feed = await pg_store.read_feed(limit=100_000)
    async with background(lambda stop: run_relay(s, stop)) as relay:
        await wait_for(lambda: _relay_done(pg_store, s), what="relay", watch=relay, timeout_s=30)
    records = await read_topic(s, s.kafka_topic)
    assert len(records) == len(feed)
    assert len({r.partition for r in records}) == s.kafka_partitions
    versions: dict[str, list[int]] = defaultdict(list)
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        assert set(HEADER_FIELDS) <= set(headers)
        assert record.key.decode() == headers["stream_id"]
        versions[headers["stream_id"]].append(int(headers["version"]))
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    assert await load_checkpoint(pg_store.pool, s.relay_name) == feed[-1].cursor


async def test_relay_publishes_persistent_confirmed_messages_sharded_by_stream_on_rabbitmq(
    rabbit_settings: Settings, pg_store: PostgresEventStore, unique: str
):
    s = rabbit_settings
    await declare_audit_queue(s, f"audit-{unique}")
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 20, prefix="h-", skus=SKUS)
    feed = await pg_store.read_feed(limit=100_000)
    async with background(lambda stop: run_relay(s, stop)) as relay:
        await wait_for(lambda: _relay_done(pg_store, s), what="relay", watch=relay, timeout_s=30)
    copies = await drain_queue(s, f"audit-{unique}")
    assert [m.message_id for m in copies] == [str(e.event_id) for e in feed]
    for message, event in zip(copies, feed, strict=True):
        headers = message.headers
        assert set(HEADER_FIELDS) <= set(headers)
        assert message.routing_key == f"{event.stream_type}.{event.event_type}"
        assert message.delivery_mode == 2  # persistent
    # every stream's events sit in exactly one shard queue, in version order
    shard_of: dict[str, set[int]] = defaultdict(set)
    versions: dict[str, list[int]] = defaultdict(list)
    for shard in range(s.rabbitmq_shards):
        for m in await drain_queue(s, shard_queue(s, s.projector_group, shard)):
            stream = str(m.headers["stream_id"])
            shard_of[stream].add(shard)
            versions[stream].append(int(str(m.headers["version"])))
    assert sum(len(v) for v in versions.values()) == len(feed)
    assert all(len(shards) == 1 for shards in shard_of.values())
    assert len(set().union(*shard_of.values())) == s.rabbitmq_shards, "all shards used"
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    assert await load_checkpoint(pg_store.pool, s.relay_name) == feed[-1].cursor


async def _relay_done(store: PostgresEventStore, settings: Settings) -> bool:
    return (await relay_lag(store, settings.relay_name)).events == 0


async def test_relay_killed_between_publish_and_checkpoint_loses_nothing_and_duplicates_change_nothing(  # noqa: E501
    stream_settings: Settings, pg_store: PostgresEventStore, audit: str
):
    s = stream_settings.model_copy(update={"relay_batch_size": 400})
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 80, prefix="k-", skus=SKUS)
    feed = await pg_store.read_feed(limit=100_000)

    crashed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.relay_fault",
        env=process_env(s, SAGAFLOW_RELAY_BATCH_SIZE="400"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(crashed.wait(), 60) == FAULT_EXIT_STATUS
    first = await published_event_ids(s, audit)
    # the relay sends the next batch while the first is acknowledged: the first batch,
    # and none, part or all of the next (on three brokers, the partitions whose
    # replicas had caught up when it died)
    assert 400 <= len(first) <= 800, "published, then died"
    assert await load_checkpoint(pg_store.pool, s.relay_name) == START, "never checkpointed"

    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        await wait_for(lambda: caught_up(pg_store, s), what="catch-up", watch=projector)

    later = await published_event_ids(s, audit)
    # a topic is read again from its start; the audit queue was drained of the first 400
    ids = [i for i, _, _ in (later if s.kafka_mode else first + later)]
    assert set(ids) == {str(e.event_id) for e in feed}, "no event missing in the broker"
    assert len(ids) == len(feed) + len(first), "what died unconfirmed was sent twice"
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def test_broker_restart_while_events_are_written_loses_nothing_and_keeps_stream_order(
    stream_settings: Settings,
    pg_store: PostgresEventStore,
    local_services: LocalServices,
    audit: str,
):
    broker = stream_settings.transport_kind.value
    s = stream_settings.model_copy(
        update={"relay_backoff_max_s": 1.0, "projector_backoff_max_s": 1.0}
    )
    await register_products(pg_store, SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)) as relay,
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        writer = OrderWriter(pg_store, "b", pause_s=0.02)
        # Why 3 s on RabbitMQ: a quorum queue needs its Raft metadata on disk before
        # the broker stops (RABBITMQ_LOCAL.md); Kafka needs no such wait.
        await asyncio.sleep(3.0 if broker == "rabbitmq" else 1.0)
        await asyncio.to_thread(local_services.stop_one, broker)
        written_while_down = await _events_written(pg_store, writer)
        await asyncio.sleep(2.0)
        assert await _events_written(pg_store, writer) > written_while_down, "writes go on"
        info = await asyncio.to_thread(local_services.start_one, broker)
        address = info.addresses.get("bootstrap") or info.addresses["url"]
        assert address in (s.kafka_bootstrap, s.rabbitmq_url), "the broker kept its port"
        await asyncio.sleep(1.0)
        assert await writer.stop() > 20
        await wait_for(
            lambda: caught_up(pg_store, s), what="catch-up", watch=projector, timeout_s=120
        )
        assert not relay.done()

    feed = await pg_store.read_feed(limit=100_000)
    published = await published_event_ids(s, audit)
    assert {i for i, _, _ in published} == {str(e.event_id) for e in feed}
    assert_stream_order((stream, version) for _, stream, version in published)
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def _events_written(store: PostgresEventStore, writer: OrderWriter) -> int:
    assert writer.running
    return (await store.feed_status()).head_position
