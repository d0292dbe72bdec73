"""The relay: the event store's global feed → Kafka, at least once, in per-stream order.

Loop: read a batch after the checkpoint, send every event (keyed by stream id) with
the idempotent producer, wait until the broker acknowledged all of them, then store
the batch's last feed cursor. A crash between acknowledgement and checkpoint
re-sends the batch: duplicates, never losses; consumers dedupe by stream version.
When the broker is unreachable the relay backs off exponentially and retries the
same batch from the same cursor, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import psycopg_pool
from aiokafka.errors import KafkaError
from psycopg_pool import AsyncConnectionPool

from eventstore.base import EventStore
from eventstore.envelope import START, FeedCursor
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from streaming.kafka import (
    encode_record,
    ensure_topic,
    idempotent_producer,
    quiet_kafka_logs,
    run_until_stopped,
)

log = logging.getLogger("sagaflow.relay")

#: exit status of the test-only fault point (between publish and checkpoint)
FAULT_EXIT_STATUS = 86


@dataclass(frozen=True)
class Lag:
    """How far a reader is behind the store's head."""

    events: int
    seconds: float
    checkpoint: str


async def load_checkpoint(pool: AsyncConnectionPool, relay_name: str) -> FeedCursor:
    """The relay's stored feed cursor (the start of the feed when it never ran)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT epoch, tx_id, position FROM relay_checkpoints WHERE relay_name = %s",
            (relay_name,),
        )
        row = await cur.fetchone()
        return FeedCursor(*row) if row else START


async def save_checkpoint(pool: AsyncConnectionPool, relay_name: str, cursor: FeedCursor) -> None:
    """Store the cursor (monotonic: an older cursor never overwrites a newer one)."""
    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO relay_checkpoints (relay_name, epoch, tx_id, position)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (relay_name) DO UPDATE
            SET epoch = EXCLUDED.epoch, tx_id = EXCLUDED.tx_id, position = EXCLUDED.position,
                updated_at = now()
            WHERE (relay_checkpoints.epoch, relay_checkpoints.tx_id, relay_checkpoints.position)
                < (EXCLUDED.epoch, EXCLUDED.tx_id, EXCLUDED.position)
            """,
            (relay_name, cursor.epoch, cursor.tx_id, cursor.position),
        )


async def relay_lag(store: EventStore, relay_name: str = "main") -> Lag:
    """Events not yet acknowledged by Kafka, and the age of the oldest of them.

    Read through the store's feed API only. ``events`` is 0 exactly when nothing is
    pending; otherwise it is the distance in global positions from the checkpoint to
    the head (at least 1; positions are close to feed order, not equal to it).
    ``seconds`` is how long ago the oldest unpublished event was recorded.
    """
    pool = getattr(store, "pool", None)
    if pool is None:
        raise TypeError("relay_lag needs a PostgreSQL event store")
    return await feed_lag(store, await load_checkpoint(pool, relay_name))


async def feed_lag(store: EventStore, cursor: FeedCursor) -> Lag:
    """Lag of a reader of the store's feed whose checkpoint is ``cursor``."""
    pending = await store.read_feed(cursor, 1)
    if not pending:
        return Lag(events=0, seconds=0.0, checkpoint=cursor.encode())
    head = (await store.feed_status()).head_position
    age = (datetime.now(UTC) - pending[0].recorded_at).total_seconds()
    return Lag(
        events=max(head - cursor.position, 1), seconds=max(age, 0.0), checkpoint=cursor.encode()
    )


#: Failures of the infrastructure (not of the data): wait and resume from the checkpoint.
RETRYABLE: tuple[type[BaseException], ...] = (
    KafkaError,
    OSError,
    TimeoutError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
)


class Relay:
    """Publishes the store's feed to ``settings.kafka_topic`` from its checkpoint."""

    def __init__(self, store: PostgresEventStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.topic = settings.kafka_topic
        self.published = 0
        self.cursor = START
        self.horizon_held_s = 0.0
        self._horizon_checked = 0.0

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set; survives broker outages by backing off."""
        stop = stop or asyncio.Event()
        s = self.settings
        delay = s.relay_backoff_initial_s
        while not stop.is_set():
            try:
                # Why reload the cursor each time: after a failed batch some of its
                # events may be in Kafka and some not; re-sending from the stored
                # cursor covers the missing ones and consumers drop the duplicates.
                self.cursor = await load_checkpoint(self.store.pool, s.relay_name)
                await ensure_topic(s, self.topic)
                await self._publish_until(stop)
                return
            except RETRYABLE as exc:
                # Kafka or PostgreSQL is away (broker restart, database restart):
                # back off and resume from the checkpoint; never exit.
                log.warning("relay: %s (%s); retrying in %.1fs", type(exc).__name__, exc, delay)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, s.relay_backoff_max_s)

    async def _publish_until(self, stop: asyncio.Event) -> None:
        s = self.settings
        producer = idempotent_producer(s)
        await producer.start()
        try:
            while not stop.is_set():
                batch = await self.store.read_feed(self.cursor, s.relay_batch_size)
                if not batch:
                    await self._watch_horizon()
                    await _sleep_or_stop(stop, s.relay_poll_interval_s)
                    continue
                futures = []
                for recorded in batch:
                    key, value, headers = encode_record(recorded)
                    futures.append(
                        await producer.send(self.topic, value=value, key=key, headers=headers)
                    )
                # Why wait for every acknowledgement before the checkpoint: the
                # checkpoint is the promise that everything before it is in Kafka.
                await asyncio.gather(*futures)
                if s.relay_fault_after_publish:
                    log.error("relay: fault point after publish, before checkpoint")
                    os._exit(FAULT_EXIT_STATUS)
                await save_checkpoint(self.store.pool, s.relay_name, batch[-1].cursor)
                self.cursor = batch[-1].cursor
                self.published += len(batch)
        finally:
            await producer.stop()

    async def _watch_horizon(self) -> None:
        """Warn (once a second at most) while an open transaction holds the feed back.

        Why: the feed is read below the oldest running transaction; a transaction
        left open stalls the relay and every reader behind it, silently otherwise.
        """
        now = asyncio.get_running_loop().time()
        if now - self._horizon_checked < 1.0:
            return
        self._horizon_checked = now
        held = (await self.store.feed_status()).horizon_held_s
        self.horizon_held_s = held
        if held > self.settings.relay_horizon_alert_s:
            log.warning(
                "relay: an open transaction has held the event feed back for %.1fs "
                "(alert bound SAGAFLOW_RELAY_HORIZON_ALERT_S=%.0fs)",
                held,
                self.settings.relay_horizon_alert_s,
            )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_relay(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Process entry point: migrate, connect and relay until ``stop`` (or forever)."""
    if not settings.database_url:
        raise ValueError("SAGAFLOW_DATABASE_URL is not set")
    quiet_kafka_logs()
    store = await PostgresEventStore.connect(settings.database_url, max_size=4)
    try:
        stop = stop or asyncio.Event()
        await run_until_stopped(Relay(store, settings).run(stop), stop)
    finally:
        await store.close()
