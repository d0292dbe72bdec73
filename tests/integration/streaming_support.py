"""Helpers of the streaming suites: per-test settings for each transport, "caught up"."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from bench.workload import run_order
from eventstore.postgres import PostgresEventStore
from projections.runner import projector_lag, streams_behind
from sagaflow.settings import Settings, Transport
from streaming.kafka import quiet_kafka_logs
from streaming.relay import relay_lag

SKUS = ["apple", "bread", "chair", "drill"]
#: the transports with a broker (the relay runs); embedded is added where it applies
BROKERS = ["kafka", "rabbitmq"]


def settings_for_test(
    settings: Settings, database_url: str, unique: str, transport: str = "kafka"
) -> Settings:
    """Settings of one test: its own database, topic / exchange, dead letters and group."""
    quiet_kafka_logs()
    logging.getLogger("sagaflow").setLevel(logging.ERROR)
    logging.getLogger("aio_pika").setLevel(logging.CRITICAL)
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    return settings.with_transport(transport).model_copy(
        update={
            "database_url": database_url,
            "kafka_topic": f"events-{unique}",
            "kafka_dead_letter_topic": f"dlt-{unique}",
            "rabbitmq_exchange": f"events-{unique}",
            "projector_group": f"projector-{unique}",
            "kafka_partitions": 3,
            "rabbitmq_shards": 3,
            "projector_backoff_initial_s": 0.05,
        }
    )


def transport_settings(request: pytest.FixtureRequest, transport: str) -> Settings:
    """``settings_for_test`` for ``transport``, skipping when its broker is not running."""
    if transport == "kafka":
        request.getfixturevalue("kafka_bootstrap")
    elif transport == "rabbitmq":
        request.getfixturevalue("rabbitmq_url")
    return settings_for_test(
        request.getfixturevalue("settings"),
        request.getfixturevalue("database_url"),
        request.getfixturevalue("unique"),
        transport,
    )


async def caught_up(store: PostgresEventStore, settings: Settings) -> bool:
    """True when the relay and the read models have every event of the store.

    On RabbitMQ the broker counts only messages not yet delivered; deliveries in
    flight are covered by checking every followed stream's watermark against the
    store (streams held by a dead letter or a retry excepted).
    """
    relayed = settings.transport_kind is not Transport.EMBEDDED
    if relayed and (await relay_lag(store, settings.relay_name)).events:
        return False
    if (await projector_lag(store, settings)).events:
        return False
    if settings.transport_kind is Transport.RABBITMQ:
        return await streams_behind(store, settings) == 0
    return True


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a relay or projector subprocess with these settings."""
    import os

    assert settings.database_url
    env = {
        **os.environ,
        "SAGAFLOW_DATABASE_URL": settings.database_url,
        "SAGAFLOW_TRANSPORT": settings.transport_kind.value,
        "SAGAFLOW_KAFKA_TOPIC": settings.kafka_topic,
        "SAGAFLOW_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "SAGAFLOW_KAFKA_DEAD_LETTER_TOPIC": settings.kafka_dead_letter_topic,
        "SAGAFLOW_RABBITMQ_EXCHANGE": settings.rabbitmq_exchange,
        "SAGAFLOW_RABBITMQ_SHARDS": str(settings.rabbitmq_shards),
        "SAGAFLOW_PROJECTOR_GROUP": settings.projector_group,
        "SAGAFLOW_DATA_DIR": str(settings.data_dir),
    }
    if settings.kafka_bootstrap:
        env["SAGAFLOW_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    if settings.rabbitmq_url:
        env["SAGAFLOW_RABBITMQ_URL"] = settings.rabbitmq_url
    env.pop("SAGAFLOW_KAFKA_ENABLED", None)
    return {**env, **extra}


async def declare_audit_queue(settings: Settings, name: str) -> None:
    """A queue bound with '#' to the events exchange: a copy of everything published."""
    from sagaflow.clients import connect_rabbitmq
    from streaming.rabbitmq import declare_events_exchange

    connection = await connect_rabbitmq(settings)
    try:
        channel = await connection.channel()
        exchange = await declare_events_exchange(channel, settings)
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, routing_key="#")
    finally:
        await connection.close()


async def drain_queue(settings: Settings, name: str, *, idle_s: float = 1.0) -> list[Any]:
    """Every message in queue ``name`` (acknowledged), in queue order."""
    from sagaflow.clients import connect_rabbitmq

    connection = await connect_rabbitmq(settings)
    messages: list[Any] = []
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.declare_queue(name, passive=True)
        # consume, not basic.get: quorum queues with a single active consumer refuse gets
        async with queue.iterator() as iterator:
            it = aiter(iterator)
            while True:
                try:
                    message = await asyncio.wait_for(anext(it), idle_s)
                except TimeoutError:
                    break
                await message.ack()
                messages.append(message)
    finally:
        await connection.close()
    return messages


async def published_event_ids(settings: Settings, audit_queue: str) -> list[tuple[str, str, int]]:
    """(event id, stream id, version) of everything the relay published, in order."""
    if settings.transport_kind is Transport.KAFKA:
        from streaming.kafka import read_topic

        out = []
        for record in await read_topic(settings, settings.kafka_topic):
            h = {k: v.decode() for k, v in record.headers}
            out.append((h["event_id"], h["stream_id"], int(h["version"])))
        return out
    drained = await drain_queue(settings, audit_queue)
    return [
        (str(m.headers["event_id"]), str(m.headers["stream_id"]), int(str(m.headers["version"])))
        for m in drained
    ]


class OrderWriter:
    """Orders written straight into the store, one after another, until stopped: the
    load a fault test keeps up while it kills or restarts something."""

    def __init__(self, store: PostgresEventStore, prefix: str, *, pause_s: float) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._write(store, prefix, pause_s))

    async def _write(self, store: PostgresEventStore, prefix: str, pause_s: float) -> int:
        count = 0
        while not self._stop.is_set():
            await run_order(store, f"{prefix}-{count}", SKUS, random.Random(count))
            count += 1
            await asyncio.sleep(pause_s)
        return count

    @property
    def running(self) -> bool:
        """False once the writer has stopped, or failed."""
        return not self._task.done()

    async def stop(self) -> int:
        """Stop writing; the number of orders written (re-raises the writer's error)."""
        self._stop.set()
        return await self._task


def assert_stream_order(published: Iterable[tuple[str, int]]) -> None:
    """Each stream's versions, in the order they were first seen on the wire, ascend.

    Redeliveries (a version seen again after a fault) are allowed; only the first
    sighting of each version counts, because that is what a consumer applies.
    """
    first_seen: dict[str, list[int]] = defaultdict(list)
    for stream, version in published:
        if version not in first_seen[stream]:
            first_seen[stream].append(version)
    disordered = {s: v for s, v in first_seen.items() if v != sorted(v)}
    assert not disordered, f"per-stream order broken: {disordered}"
