"""The Kafka transport: publisher, subscriber (consumer group), topics, backlog.

The wire format: key = ``stream_id`` (so one aggregate's events share a partition
and keep their order), value = the JSON envelope, headers = the envelope's scalar
fields (routing and tracing without parsing the body). Every aiokafka client is
built with ``sagaflow.clients.kafka_client_options`` (bootstrap, SASL, TLS).

Retention: the topic is created with ``retention.ms`` = SAGAFLOW_KAFKA_RETENTION_MS
(7 days by default). Nothing depends on old records: the event store is the source
of truth, a new read model bootstraps from it, and a version gap is healed from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Sequence
from datetime import datetime
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.partitioner import DefaultPartitioner
from psycopg_pool import AsyncConnectionPool

from eventstore.envelope import EncodedEvent, RecordedEvent
from sagaflow.clients import kafka_client_options
from sagaflow.settings import Settings
from streaming.transport import Backlog, Batch, Deliver, Message, Position, Publisher, Subscriber

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


def admin_client(settings: Settings, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client with the settings' bootstrap, SASL and TLS."""
    return AIOKafkaAdminClient(
        **kafka_client_options(settings, request_timeout_ms=15_000, **overrides)
    )


def consumer_client(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with the settings' bootstrap, SASL and TLS."""
    return AIOKafkaConsumer(**kafka_client_options(settings, **overrides))


def header_values(event: EncodedEvent) -> list[tuple[str, str]]:
    """The envelope's scalar fields (HEADER_FIELDS order), then ``meta.<name>`` for each
    metadata value that is set: the headers of both brokers."""
    values = [
        ("event_id", event.event_id),
        ("event_type", event.event_type),
        ("schema_version", str(event.schema_version)),
        ("stream_id", event.stream_id),
        ("stream_type", event.stream_type),
        ("version", str(event.version)),
        ("global_position", str(event.cursor.position)),
        ("recorded_at", event.recorded_at),
        ("cursor", event.cursor.encode()),
    ]
    for name, meta in (event.metadata or {}).items():
        if meta is not None:
            values.append((f"meta.{name}", str(meta)))
    return values


def encode_record(
    event: EncodedEvent | RecordedEvent,
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of one event on the wire."""
    if isinstance(event, RecordedEvent):
        event = EncodedEvent.of(event)
    headers = [(name, value.encode()) for name, value in header_values(event)]
    return event.stream_id.encode(), event.body, headers


def idempotent_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer that never duplicates or reorders within a partition on its own retries.

    Why idempotence + acks=all: a retried send after a lost acknowledgement would
    otherwise write the event twice or behind a later one.
    """
    options: dict[str, Any] = {
        **kafka_client_options(settings),
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
    """Create ``topic`` if it does not exist: the configured partitions and retention,
    one replica per broker (SAGAFLOW_KAFKA_REPLICATION_FACTOR, else SAGAFLOW_KAFKA_BROKERS)
    and ``min.insync.replicas`` (SAGAFLOW_KAFKA_MIN_INSYNC_REPLICAS, else half of them
    rounded up: 2 of 3); then wait until every partition
    has a leader and all its replicas in sync, so the first writes are not refused.
    """
    replicas = settings.topic_replication_factor
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = await admin.list_topics()
        if topic in existing:
            return
        response = await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=partitions or settings.kafka_partitions,
                    replication_factor=replicas,
                    topic_configs={
                        "retention.ms": str(settings.kafka_retention_ms),
                        "min.insync.replicas": str(settings.topic_min_insync_replicas),
                    },
                )
            ]
        )
        # Why read the answer: the admin client reports a refused topic in the
        # response, it raises nothing.
        for entry in response.topic_errors:
            code = entry[1]
            if code == TopicAlreadyExistsError.errno:
                break  # another process won the race
            if code:
                detail = entry[2] if len(entry) > 2 and entry[2] else for_code(code).description
                hint = (
                    " (SAGAFLOW_KAFKA_REPLICATION_FACTOR / SAGAFLOW_KAFKA_BROKERS)"
                    if code == InvalidReplicationFactorError.errno
                    else ""
                )
                raise for_code(code)(f"creating topic {topic}: {detail}{hint}")
        else:
            log.info("created topic %s (%d replicas)", topic, replicas)
    finally:
        await admin.close()
    await wait_topic_in_sync(settings, topic, replicas)


async def wait_topic_in_sync(
    settings: Settings, topic: str, replicas: int, *, timeout_s: float = 30.0
) -> None:
    """Wait until every partition of ``topic`` has a leader and ``replicas`` in-sync
    replicas; a warning (not an error) after ``timeout_s``: a broker may be down, and
    writes still succeed while ``min.insync.replicas`` of them are in sync."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    behind: list[int] = []
    admin = admin_client(settings)
    await admin.start()
    try:
        while loop.time() < deadline:
            try:
                described = await admin.describe_topics([topic])
            except KafkaError:  # asked a broker that is down: ask another
                await asyncio.sleep(0.2)
                continue
            parts = [p for d in described if d.get("error_code") == 0 for p in d["partitions"]]
            behind = [p["partition"] for p in parts if p["leader"] < 0 or len(p["isr"]) < replicas]
            if parts and not behind:
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    log.warning(
        "topic %s: partitions %s have fewer than %d in-sync replicas", topic, behind, replicas
    )


async def read_topic(settings: Settings, topic: str, *, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to the current end (no group).

    For tests, audits and the benchmark; returns aiokafka ``ConsumerRecord`` objects in
    partition order, each partition in offset order.
    """
    consumer = consumer_client(settings, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        admin = admin_client(settings)
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


# --- the transport port ------------------------------------------------------------------


class KafkaPublisher(Publisher):
    """The relay's side: the idempotent producer, keyed by stream id."""

    #: streams whose partition is remembered before the memo is cleared
    MEMO_LIMIT = 100_000

    def __init__(self, settings: Settings) -> None:
        kafka_client_options(settings)  # one clear line when no broker is configured
        self.settings = settings
        self.topic = settings.kafka_topic
        self.producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partitions: list[int] = []
        self._partition_of: dict[str, int] = {}

    async def start(self) -> None:
        """Create the topic if needed, then connect the producer."""
        await ensure_topic(self.settings, self.topic)
        self.producer = idempotent_producer(self.settings)
        await self.producer.start()

    async def close(self) -> None:
        """Flush and disconnect."""
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await producer.stop()

    async def publish(self, batch: Sequence[EncodedEvent]) -> None:
        """Send every event, then wait for every acknowledgement (acks=all)."""
        await (await self.send(batch))

    async def send(self, batch: Sequence[EncodedEvent]) -> Awaitable[None]:
        """Queue the events as one record batch per partition (in order); the result
        awaits the broker's acknowledgement of all of them.

        Why record batches: ``producer.send`` costs a future, a partitioner call and an
        accumulator lookup per event; a batch builder per partition costs one append.
        Why order holds: a partition's batches are queued in the order built, each one
        only after the previous one of that partition was drained to the broker, and
        the idempotent producer never reorders a partition's batches on retry.
        """
        producer = self.producer
        assert producer is not None
        builders: dict[int, Any] = {}
        sent: list[asyncio.Future[Any]] = []
        partition_of = await self._partition_memo()
        for event in batch:
            key = event.stream_id.encode()
            partition = partition_of.get(event.stream_id)
            if partition is None:
                partition = self._partitioner(key, self._partitions, self._partitions)
                partition_of[event.stream_id] = partition
            headers = [(name, value.encode()) for name, value in header_values(event)]
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = producer.create_batch()
            if builder.append(timestamp=None, key=key, value=event.body, headers=headers) is None:
                # full (max_batch_size): queue it and go on with a fresh one
                sent.append(await producer.send_batch(builder, self.topic, partition=partition))
                builder = builders[partition] = producer.create_batch()
                if (
                    builder.append(timestamp=None, key=key, value=event.body, headers=headers)
                    is None
                ):
                    raise ValueError(
                        f"event {event.event_id} ({len(event.body)} bytes) does not fit in "
                        "one Kafka record batch"
                    )
        for partition, builder in builders.items():
            sent.append(await producer.send_batch(builder, self.topic, partition=partition))
        return cast("Awaitable[None]", asyncio.gather(*sent))

    async def _partition_memo(self) -> dict[str, int]:
        """stream id → partition, as the producer's default partitioner picks it.

        Why the producer's partitioner: a stream's earlier events were keyed into a
        partition by it (murmur2 of the key over the sorted partition ids); its later
        events must land in the same one. Cleared when the partitions change.
        """
        assert self.producer is not None
        partitions = sorted(await self.producer.partitions_for(self.topic))
        if partitions != self._partitions or len(self._partition_of) > self.MEMO_LIMIT:
            self._partitions = partitions
            self._partition_of = {}
        return self._partition_of


def kafka_checkpoint(consumer: str):  # type: ignore[no-untyped-def]
    """A checkpoint writing each partition's next offset (monotonic) in the transaction."""

    async def write(conn: Any, messages: Sequence[Message], last_at: datetime | None) -> None:
        ends: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.position.source, m.position.lane)
            ends[key] = max(ends.get(key, 0), m.position.ordinal + 1)
        # Why greatest(): during a rebalance the old owner may commit after the new
        # one; the stored position must never move backwards.
        async with conn.cursor() as cur:
            await cur.executemany(
                """
                INSERT INTO projection_offsets (consumer, topic, partition, next_offset,
                                                last_event_at)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (consumer, topic, partition) DO UPDATE
                SET next_offset = greatest(projection_offsets.next_offset, EXCLUDED.next_offset),
                    last_event_at = coalesce(EXCLUDED.last_event_at,
                                             projection_offsets.last_event_at),
                    updated_at = now()
                """,
                [(consumer, t, p, end, last_at) for (t, p), end in sorted(ends.items())],
            )

    return write


class _ResumeFromPostgres(ConsumerRebalanceListener):
    """Seeks every newly assigned partition to the offset stored with the read models."""

    def __init__(self, subscriber: KafkaSubscriber) -> None:
        self.subscriber = subscriber

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Why take the lock: let the batch in progress commit before the partition
        # moves to another member, so the two never apply the same messages at once.
        async with self.subscriber.batch_lock:
            pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        sub = self.subscriber
        async with sub.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT topic, partition, next_offset FROM projection_offsets WHERE consumer = %s",
                (sub.group,),
            )
            stored = {TopicPartition(t, p): o for t, p, o in await cur.fetchall()}
        assert sub.consumer is not None
        for tp in assigned:
            if tp in stored:
                sub.consumer.seek(tp, stored[tp])
            else:
                await sub.consumer.seek_to_beginning(tp)
        log.info("assigned %s", sorted((tp.partition, stored.get(tp, 0)) for tp in assigned))


class KafkaSubscriber(Subscriber):
    """A member of the projector's consumer group; offsets live in PostgreSQL.

    Kafka's own committed offsets are never trusted for correctness: each partition's
    next offset is written in the read-model transaction and sought on assignment.
    """

    def __init__(self, settings: Settings, pool: AsyncConnectionPool) -> None:
        self.settings = settings
        self.pool = pool
        self.group = settings.projector_group
        self.batch_lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.checkpoint = kafka_checkpoint(self.group)

    async def publish_dead_letter(self, message: Message, headers: dict[str, str]) -> None:
        """Copy the dead letter to the dead-letter topic, with its reason in headers."""
        assert self.producer is not None
        pos = message.position
        extra = {
            **headers,
            "dlt.topic": pos.source,
            "dlt.partition": str(pos.lane),
            "dlt.offset": str(pos.ordinal),
        }
        await self.producer.send_and_wait(
            self.settings.kafka_dead_letter_topic,
            value=message.body(),
            key=message.stream_id.encode() if message.stream_id else None,
            headers=[*message.header_pairs(), *((k, v.encode()) for k, v in extra.items())],
        )

    async def replays_from_start(self) -> bool:
        """True when the group stored no offset and no partition lost records to retention."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM projection_offsets WHERE consumer = %s AND topic = %s LIMIT 1",
                (self.group, self.settings.kafka_topic),
            )
            if await cur.fetchone() is not None:
                return False
        await ensure_topic(self.settings, self.settings.kafka_topic)
        partitions = await topic_partitions(self.settings, self.settings.kafka_topic)
        consumer = consumer_client(self.settings, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(self.settings.kafka_topic, p) for p in sorted(partitions)]
            firsts = await consumer.beginning_offsets(tps) if tps else {}
        finally:
            await consumer.stop()
        return all(offset == 0 for offset in firsts.values())

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        """Consume and deliver until ``stop`` is set."""
        s = self.settings
        await ensure_topic(s, s.kafka_topic)
        await ensure_topic(s, s.kafka_dead_letter_topic)
        self.consumer = consumer_client(
            s,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.projector_batch_size,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        self.producer = idempotent_producer(s, linger_ms=0)
        await self.producer.start()
        self.consumer.subscribe([s.kafka_topic], listener=_ResumeFromPostgres(self))
        try:
            await self.consumer.start()
            while not stop.is_set():
                polled = await self.consumer.getmany(
                    timeout_ms=int(s.projector_poll_interval_s * 1000),
                    max_records=s.projector_batch_size,
                )
                # One transaction for the whole poll (all partitions): fewer, larger
                # commits. A stream lives in one partition, so its order is kept.
                async with self.batch_lock:
                    assigned = self.consumer.assignment()
                    messages = [
                        Message(
                            position=Position(r.topic, r.partition, r.offset),
                            stream_id=r.key.decode(errors="replace") if r.key else None,
                            payload=r.value if r.value is not None else b"",
                            headers=tuple(r.headers or ()),
                        )
                        for tp, records in polled.items()
                        if tp in assigned  # revoked while we polled: the new owner resumes
                        for r in records
                    ]
                    if messages:
                        await deliver(Batch(messages, self.checkpoint))
        finally:
            await self.consumer.stop()
            await self.producer.stop()


async def topic_partitions(settings: Settings, topic: str) -> set[int]:
    """The partition ids of ``topic`` (empty when it does not exist)."""
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]}


async def kafka_backlog(
    settings: Settings, pool: AsyncConnectionPool, consumer: AIOKafkaConsumer | None = None
) -> Backlog:
    """Per partition, the log end offset minus the offset stored with the read models."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT partition, next_offset, last_event_at FROM projection_offsets "
            "WHERE consumer = %s AND topic = %s",
            (settings.projector_group, settings.kafka_topic),
        )
        stored = {p: (o, at) for p, o, at in await cur.fetchall()}
    own = consumer is None
    if consumer is None:
        consumer = consumer_client(settings, enable_auto_commit=False)
        await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.kafka_topic)
        if not partitions:
            # A consumer knows only its subscriptions' metadata: ask the cluster.
            partitions = await topic_partitions(settings, settings.kafka_topic)
        tps = [TopicPartition(settings.kafka_topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        if own:
            await consumer.stop()
    behind = 0
    oldest: datetime | None = None
    for tp, end in ends.items():
        offset, at = stored.get(tp.partition, (0, None))
        if end > offset:
            behind += end - offset
            if at is not None and (oldest is None or at < oldest):
                oldest = at
    return Backlog(behind, oldest)
