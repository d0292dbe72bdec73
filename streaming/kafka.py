"""Kafka plumbing shared by the relay, the projector and the dead-letter topic.

The wire format: key = ``stream_id`` (so one aggregate's events share a partition
and keep their order), value = the JSON envelope, headers = the envelope's scalar
fields (routing and tracing without parsing the body).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from eventstore.envelope import RecordedEvent
from sagaflow.settings import Settings

log = logging.getLogger("sagaflow.streaming")

HEADER_FIELDS = (
    "event_id",
    "event_type",
    "schema_version",
    "stream_id",
    "stream_type",
    "version",
    "global_position",
    "recorded_at",
    "cursor",
)


def quiet_kafka_logs(level: int = logging.CRITICAL) -> None:
    """aiokafka logs every failed connection attempt; our retry loop reports outages."""
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).setLevel(level)


def bootstrap(settings: Settings) -> str:
    """The configured bootstrap list; a clear error when Kafka mode has none."""
    if not settings.kafka_bootstrap:
        raise ValueError(
            "SAGAFLOW_KAFKA_BOOTSTRAP is not set (or set SAGAFLOW_KAFKA_ENABLED=false "
            "for embedded mode)"
        )
    return settings.kafka_bootstrap


def encode_record(recorded: RecordedEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of one event on the wire."""
    envelope = recorded.envelope()
    value = json.dumps(envelope, separators=(",", ":")).encode()
    headers = [(name, str(envelope[name]).encode()) for name in HEADER_FIELDS]
    for name, meta in (recorded.metadata or {}).items():
        if meta is not None:
            headers.append((f"meta.{name}", str(meta).encode()))
    return recorded.stream_id.encode(), value, headers


def idempotent_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer that never duplicates or reorders within a partition on its own retries.

    Why idempotence + acks=all: a retried send after a lost acknowledgement would
    otherwise write the event twice or behind a later one.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap(settings),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": settings.relay_linger_ms,
        "max_batch_size": 1024 * 1024,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def ensure_topic(settings: Settings, topic: str, partitions: int | None = None) -> None:
    """Create ``topic`` with the configured partitions if it does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(settings), request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = await admin.list_topics()
        if topic in existing:
            return
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=partitions or settings.kafka_partitions,
                        replication_factor=settings.kafka_replication_factor,
                    )
                ]
            )
            log.info("created topic %s", topic)
        except TopicAlreadyExistsError:
            pass  # another process won the race
    finally:
        await admin.close()


async def read_topic(settings: Settings, topic: str, *, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to the current end (no group).

    For tests, audits and the benchmark; returns aiokafka ``ConsumerRecord`` objects in
    partition order, each partition in offset order.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(settings))
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        tps = [
            TopicPartition(topic, p["partition"])
            for d in described
            if d.get("error_code") == 0
            for p in d["partitions"]
        ]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        # Why explicit seeks: seek_to_beginning is applied lazily, and position()
        # before the first fetch would resolve it with the reset policy instead.
        for tp, first in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, first)
        records: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout_s}s")
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                records[tp.partition].extend(batch)
        return [r for p in sorted(records) for r in records[p]]
    finally:
        await consumer.stop()


async def run_until_stopped(
    work: Coroutine[Any, Any, None], stop: asyncio.Event, *, grace_s: float = 5.0
) -> None:
    """Run ``work`` until it ends or ``stop`` is set plus ``grace_s``, then cancel it.

    Why: aiokafka calls block for their whole timeout while the broker is down
    (``getmany`` waiting for an assignment, a send waiting for its acknowledgement),
    so a loop that only checks ``stop`` between batches may not see it for minutes.
    Cancelling mid-batch is safe by design: every batch commits its read-model change
    and position in one transaction, and the relay checkpoints only after acks.
    """
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace_s)
        if not task.done():
            task.cancel()
            # Client shutdown (in the task's finally blocks) may itself wait for an
            # absent broker: bounded, then we leave it to the process exit.
            await asyncio.wait({task}, timeout=grace_s)
        elif not task.cancelled():
            task.result()
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
