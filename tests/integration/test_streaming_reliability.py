"""The relay under faults: killed between publish and checkpoint, broker restarted."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections import defaultdict

import pytest

from eventstore.envelope import START
from eventstore.postgres import PostgresEventStore
from projections.handlers import default_projections
from projections.runner import run_projector
from projections.verify import verify_against_rebuild
from sagaflow.services import LocalServices
from sagaflow.settings import Settings
from streaming.kafka import HEADER_FIELDS, read_topic
from streaming.relay import FAULT_EXIT_STATUS, load_checkpoint, relay_lag, run_relay
from streaming.workload import background, register_products, run_order, run_orders, wait_for
from tests.integration.test_projections_pipeline import SKUS, caught_up, settings_for_test

pytestmark = pytest.mark.integration


@pytest.fixture
def stream_settings(settings: Settings, database_url: str, kafka_bootstrap: str, unique: str):
    """Settings of one test: its own database, topic, dead-letter topic and group."""
    return settings_for_test(settings, database_url, unique)


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.database_url and settings.kafka_bootstrap
    return {
        **os.environ,
        "SAGAFLOW_DATABASE_URL": settings.database_url,
        "SAGAFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SAGAFLOW_KAFKA_ENABLED": "true",
        "SAGAFLOW_KAFKA_TOPIC": settings.kafka_topic,
        "SAGAFLOW_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "SAGAFLOW_KAFKA_DEAD_LETTER_TOPIC": settings.kafka_dead_letter_topic,
        "SAGAFLOW_PROJECTOR_GROUP": settings.projector_group,
        **extra,
    }


async def test_relay_publishes_each_event_keyed_by_stream_with_envelope_headers_in_order(
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings
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


async def _relay_done(store: PostgresEventStore, settings: Settings) -> bool:
    return (await relay_lag(store, settings.relay_name)).events == 0


async def test_relay_killed_between_publish_and_checkpoint_loses_nothing_and_duplicates_change_nothing(  # noqa: E501
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings.model_copy(update={"relay_batch_size": 400})
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 80, prefix="k-", skus=SKUS)
    feed = await pg_store.read_feed(limit=100_000)

    crashed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streaming",
        "relay",
        env=_env(s, SAGAFLOW_RELAY_FAULT_AFTER_PUBLISH="true", SAGAFLOW_RELAY_BATCH_SIZE="400"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(crashed.wait(), 60) == FAULT_EXIT_STATUS
    assert len(await read_topic(s, s.kafka_topic)) == 400, "published, then died"
    assert await load_checkpoint(pg_store.pool, s.relay_name) == START, "never checkpointed"

    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        await wait_for(lambda: caught_up(pg_store, s), what="catch-up", watch=projector)

    records = await read_topic(s, s.kafka_topic)
    ids = [dict(r.headers)["event_id"].decode() for r in records]
    assert set(ids) == {str(e.event_id) for e in feed}, "no event missing in Kafka"
    assert len(ids) == len(feed) + 400, "the first batch was published twice"
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def test_broker_restart_while_events_are_written_loses_nothing_and_keeps_stream_order(
    stream_settings: Settings,
    pg_store: PostgresEventStore,
    local_services: LocalServices,
):
    s = stream_settings.model_copy(
        update={"relay_backoff_max_s": 1.0, "projector_backoff_max_s": 1.0}
    )
    await register_products(pg_store, SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)) as relay,
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        writing = asyncio.Event()

        async def write_orders() -> int:
            count = 0
            while not writing.is_set():
                await run_order(pg_store, f"b-{count}", SKUS, random.Random(count))
                count += 1
                await asyncio.sleep(0.02)
            return count

        writer = asyncio.create_task(write_orders())
        await asyncio.sleep(1.0)
        await asyncio.to_thread(local_services.stop_one, "kafka")
        written_while_down = await _events_written(pg_store, writer)
        await asyncio.sleep(2.0)
        assert await _events_written(pg_store, writer) > written_while_down, "writes go on"
        info = await asyncio.to_thread(local_services.start_one, "kafka")
        assert info.addresses["bootstrap"] == s.kafka_bootstrap, "the broker kept its port"
        await asyncio.sleep(1.0)
        writing.set()
        assert await writer > 20
        await wait_for(
            lambda: caught_up(pg_store, s), what="catch-up", watch=projector, timeout_s=120
        )
        assert not relay.done()

    feed = await pg_store.read_feed(limit=100_000)
    records = await read_topic(s, s.kafka_topic)
    assert {dict(r.headers)["event_id"].decode() for r in records} == {
        str(e.event_id) for e in feed
    }
    first_seen: dict[str, list[int]] = defaultdict(list)
    for r in records:
        headers = dict(r.headers)
        stream, version = headers["stream_id"].decode(), int(headers["version"])
        if version not in first_seen[stream]:
            first_seen[stream].append(version)
    assert all(v == sorted(v) for v in first_seen.values()), "per-stream order kept"
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def _events_written(store: PostgresEventStore, writer: asyncio.Task[int]) -> int:
    assert not writer.done()
    return (await store.feed_status()).head_position
