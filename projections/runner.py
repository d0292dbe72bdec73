"""The projector process: a Kafka consumer group, or the store's feed in embedded mode.

Both modes hand batches to the same ``Projector`` with a checkpoint written in the
batch's transaction: Kafka mode stores (topic, partition, next offset) per
partition and seeks to them on every assignment; embedded mode stores the feed
cursor. Kafka's own committed offsets are never trusted for correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg_pool import AsyncConnectionPool

from eventstore.envelope import START, FeedCursor
from eventstore.migrate import psycopg_url, upgrade
from eventstore.postgres import PostgresEventStore
from eventstore.upcasting import Upcasters, default_upcasters
from projections.engine import DeadLetter, Message, Projector
from projections.handlers import Conn, Projection, default_projections
from sagaflow.settings import Settings
from streaming.kafka import (
    bootstrap,
    ensure_topic,
    idempotent_producer,
    quiet_kafka_logs,
    run_until_stopped,
)
from streaming.relay import RETRYABLE, feed_lag, relay_lag

log = logging.getLogger("sagaflow.projector")

FEED_TOPIC = "$feed"


async def open_pool(
    database_url: str, *, max_size: int = 8, migrate: bool = True
) -> AsyncConnectionPool:
    """A psycopg pool on the read-model database (migrated to head unless told not to)."""
    url = psycopg_url(database_url)
    if migrate:
        await asyncio.to_thread(upgrade, url)
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True, "options": "-c statement_timeout=60000"},
    )
    await pool.open(wait=True, timeout=30)
    return pool


# --- Kafka mode -------------------------------------------------------------------------


def kafka_checkpoint(consumer: str):  # type: ignore[no-untyped-def]
    """A checkpoint writing the partition's next offset (monotonic) in the transaction."""

    async def write(conn: Conn, messages: Sequence[Message], last_at: datetime | None) -> None:
        ends: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic, m.partition)
            ends[key] = max(ends.get(key, 0), m.offset + 1)
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

    def __init__(self, runner: KafkaProjectorRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Why take the lock: let the batch in progress commit before the partition
        # moves to another member, so the two never apply the same messages at once.
        async with self.runner.batch_lock:
            pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        runner = self.runner
        async with runner.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT topic, partition, next_offset FROM projection_offsets WHERE consumer = %s",
                (runner.group,),
            )
            stored = {TopicPartition(t, p): o for t, p, o in await cur.fetchall()}
        for tp in assigned:
            if tp in stored:
                runner.consumer.seek(tp, stored[tp])
            else:
                await runner.consumer.seek_to_beginning(tp)
        log.info("assigned %s", sorted((tp.partition, stored.get(tp, 0)) for tp in assigned))


class KafkaProjectorRunner:
    """A member of the projector consumer group."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        projections: Sequence[Projection],
        upcasters: Upcasters,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.group = settings.projector_group
        self.batch_lock = asyncio.Lock()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap(settings),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.projector_batch_size,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        self.producer = idempotent_producer(settings, linger_ms=0)
        self.projector = Projector(
            pool,
            projections,
            upcasters,
            consumer=self.group,
            retry_attempts=settings.projector_retry_attempts,
            backoff_initial_s=settings.projector_backoff_initial_s,
            backoff_max_s=settings.projector_backoff_max_s,
            dead_letter_sink=self._publish_dead_letter,
        )
        self.checkpoint = kafka_checkpoint(self.group)

    async def _publish_dead_letter(self, letter: DeadLetter) -> None:
        msg = letter.message
        headers = [
            *msg.headers,
            ("dlt.error", letter.error.encode()),
            ("dlt.handler", letter.handler.encode()),
            ("dlt.attempts", str(letter.attempts).encode()),
            ("dlt.topic", msg.topic.encode()),
            ("dlt.partition", str(msg.partition).encode()),
            ("dlt.offset", str(msg.offset).encode()),
            ("dlt.consumer", letter.consumer.encode()),
        ]
        await self.producer.send_and_wait(
            self.settings.kafka_dead_letter_topic,
            value=msg.body(),
            key=msg.key.encode() if msg.key else None,
            headers=headers,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and apply until ``stop`` is set."""
        s = self.settings
        await ensure_topic(s, s.kafka_topic)
        await ensure_topic(s, s.kafka_dead_letter_topic)
        await self.producer.start()
        self.consumer.subscribe([s.kafka_topic], listener=_ResumeFromPostgres(self))
        await self.consumer.start()
        try:
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
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key.decode(errors="replace") if r.key else None,
                            payload=r.value if r.value is not None else b"",
                            headers=tuple(r.headers or ()),
                        )
                        for tp, records in polled.items()
                        if tp in assigned  # revoked while we polled: the new owner resumes
                        for r in records
                    ]
                    await self.projector.process(messages, self.checkpoint)
        finally:
            await self.consumer.stop()
            await self.producer.stop()


# --- embedded mode ------------------------------------------------------------------------


async def load_feed_checkpoint(pool: AsyncConnectionPool, consumer: str) -> FeedCursor:
    """The embedded projector's stored feed cursor."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT epoch, tx_id, position FROM projection_feed_checkpoints WHERE consumer = %s",
            (consumer,),
        )
        row = await cur.fetchone()
        return FeedCursor(*row) if row else START


def feed_checkpoint(consumer: str, cursors: dict[int, FeedCursor]):  # type: ignore[no-untyped-def]
    """A checkpoint writing the feed cursor of the batch's last event in the transaction."""

    async def write(conn: Conn, messages: Sequence[Message], last_at: datetime | None) -> None:
        cursor = cursors[messages[-1].offset]
        await conn.execute(
            """
            INSERT INTO projection_feed_checkpoints (consumer, epoch, tx_id, position)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (consumer) DO UPDATE
            SET epoch = EXCLUDED.epoch, tx_id = EXCLUDED.tx_id, position = EXCLUDED.position,
                updated_at = now()
            """,
            (consumer, cursor.epoch, cursor.tx_id, cursor.position),
        )

    return write


async def run_embedded(
    settings: Settings,
    store: PostgresEventStore,
    pool: AsyncConnectionPool,
    projections: Sequence[Projection],
    stop: asyncio.Event,
) -> Projector:
    """Apply the store's feed directly (no Kafka), same handlers, same checkpoint rule."""
    consumer = settings.projector_group
    projector = Projector(
        pool,
        projections,
        store.upcasters,
        consumer=consumer,
        retry_attempts=settings.projector_retry_attempts,
        backoff_initial_s=settings.projector_backoff_initial_s,
        backoff_max_s=settings.projector_backoff_max_s,
    )
    start = await load_feed_checkpoint(pool, consumer)
    async for batch in store.follow(
        start,
        batch_size=settings.projector_batch_size,
        poll_interval_s=settings.projector_poll_interval_s,
        stop=stop,
    ):
        cursors = {e.global_position: e.cursor for e in batch}
        messages = [
            Message(FEED_TOPIC, 0, e.global_position, e.stream_id, recorded=e) for e in batch
        ]
        await projector.process(messages, feed_checkpoint(consumer, cursors))
    return projector


# --- process entry ------------------------------------------------------------------------


async def run_projector(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    projections: Sequence[Projection] | None = None,
    upcasters: Upcasters | None = None,
) -> None:
    """Process entry point: Kafka consumer group, or embedded mode when Kafka is disabled.

    A Kafka outage stops the consumer; it is restarted with backoff and resumes from
    the offsets stored in PostgreSQL.
    """
    if not settings.database_url:
        raise ValueError("SAGAFLOW_DATABASE_URL is not set")
    stop = stop or asyncio.Event()
    chosen = list(projections) if projections is not None else default_projections()
    pool = await open_pool(settings.database_url)
    try:
        if not settings.kafka_enabled:
            store = await PostgresEventStore.connect(
                settings.database_url, migrate=False, max_size=2, upcasters=upcasters
            )
            try:
                await _retry_forever(
                    lambda: run_embedded(settings, store, pool, chosen, stop), settings, stop
                )
            finally:
                await store.close()
            return
        quiet_kafka_logs()
        await run_until_stopped(_consume_forever(settings, pool, chosen, upcasters, stop), stop)
    finally:
        await pool.close()


async def _consume_forever(
    settings: Settings,
    pool: AsyncConnectionPool,
    projections: Sequence[Projection],
    upcasters: Upcasters | None,
    stop: asyncio.Event,
) -> None:
    async def consume() -> None:
        runner = KafkaProjectorRunner(settings, pool, projections, upcasters or default_upcasters())
        await runner.run(stop)

    await _retry_forever(consume, settings, stop)


async def _retry_forever(
    run: Callable[[], Awaitable[object]], settings: Settings, stop: asyncio.Event
) -> None:
    """Run until ``stop``; restart with backoff when Kafka or PostgreSQL goes away.

    Positions live in PostgreSQL with the read models: a fresh consumer (or feed
    follower) resumes exactly where the last committed transaction left off.
    """
    delay = settings.projector_backoff_initial_s or 0.1
    while not stop.is_set():
        try:
            await run()
            return
        except RETRYABLE as exc:
            log.warning("projector: %s (%s); restarting in %.1fs", type(exc).__name__, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, settings.projector_backoff_max_s)


@dataclass(frozen=True)
class ProjectorLag:
    """How far the read models are behind the event store (relay included)."""

    #: events appended to the store and not yet applied (0 exactly when caught up)
    events: int
    #: age of the oldest unapplied event (an upper bound in Kafka mode)
    seconds: float
    dead_letters_open: int
    parked: int

    def over_bounds(self, settings: Settings) -> bool:
        """True when the API should push back (SAGAFLOW_PROJECTION_LAG_MAX_EVENTS / _S)."""
        return (
            self.events > settings.projection_lag_max_events
            or self.seconds > settings.projection_lag_max_s
        )


async def projector_lag(
    store: PostgresEventStore,
    settings: Settings,
    *,
    consumer: AIOKafkaConsumer | None = None,
) -> ProjectorLag:
    """Lag of the read models behind the store, for /metrics and API backpressure.

    Embedded mode: measured on the feed from the projector's cursor. Kafka mode: the
    relay's lag plus, per partition, the log end offset minus the offset stored with
    the read models. Pass a started ``consumer`` (no group) to reuse one connection
    across calls; otherwise a short-lived one is opened.
    """
    pool = store.pool
    group = settings.projector_group
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM dead_letters WHERE status = 'open' AND consumer = %s),"
            " (SELECT count(*) FROM parked_messages WHERE consumer = %s)",
            (group, group),
        )
        counts = await cur.fetchone()
    assert counts is not None
    letters, parked = int(counts[0]), int(counts[1])
    if not settings.kafka_enabled:
        lag = await feed_lag(store, await load_feed_checkpoint(pool, group))
        return ProjectorLag(lag.events, lag.seconds, letters, parked)
    relay = await relay_lag(store, settings.relay_name)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT partition, next_offset, last_event_at FROM projection_offsets "
            "WHERE consumer = %s AND topic = %s",
            (group, settings.kafka_topic),
        )
        stored = {p: (o, at) for p, o, at in await cur.fetchall()}
    ends = await _end_offsets(settings, consumer)
    behind = 0
    oldest: datetime | None = None
    for partition, end in ends.items():
        offset, at = stored.get(partition, (0, None))
        if end > offset:
            behind += end - offset
            if at is not None and (oldest is None or at < oldest):
                oldest = at
    seconds = relay.seconds
    if behind and oldest is not None:
        seconds = max(seconds, (datetime.now(UTC) - oldest).total_seconds())
    return ProjectorLag(relay.events + behind, seconds, letters, parked)


async def topic_partitions(settings: Settings, topic: str) -> set[int]:
    """The partition ids of ``topic`` (empty when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(settings), request_timeout_ms=15_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]}


async def _end_offsets(settings: Settings, consumer: AIOKafkaConsumer | None) -> dict[int, int]:
    own = consumer is None
    if consumer is None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(settings), enable_auto_commit=False)
        await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.kafka_topic)
        if not partitions:
            # A consumer knows only its subscriptions' metadata: ask the cluster.
            partitions = await topic_partitions(settings, settings.kafka_topic)
        tps = [TopicPartition(settings.kafka_topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        if own:
            await consumer.stop()
