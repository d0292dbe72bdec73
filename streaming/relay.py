"""The relay: the event store's global feed → the transport, at least once, in order.

Loop: read a batch after the checkpoint, hand it to the transport's ``Publisher``
(Kafka: keyed by stream id, idempotent producer; RabbitMQ: the topic exchange with
publisher confirms), which returns when the broker confirmed all of it, then store
the batch's last feed cursor. A crash between confirmation and checkpoint re-sends
the batch: duplicates, never losses; consumers dedupe by stream version. When the
broker is unreachable the relay backs off exponentially and retries the same batch
from the same cursor, so nothing is skipped.

High availability (``streaming.lease``): any number of relays may run; the one
holding the destination's lease publishes, the others stand by and take over when
it dies. Every checkpoint write of the active relay carries its lease epoch and is
refused once another relay took over, so only the current holder moves it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import psycopg_pool
from aiokafka.errors import KafkaError
from psycopg_pool import AsyncConnectionPool

from eventstore.base import EventStore
from eventstore.envelope import START, EncodedEvent, FeedCursor
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from streaming.kafka import quiet_kafka_logs, run_until_stopped
from streaming.lease import Fence, LeaseLost, RelayLease
from streaming.transport import Publisher, make_publisher, why_refused

log = logging.getLogger("sagaflow.relay")

#: called after a batch is confirmed and before its checkpoint (tests inject faults here)
AfterPublish = Callable[[Sequence[EncodedEvent]], Awaitable[None]]


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


async def save_checkpoint(
    pool: AsyncConnectionPool, relay_name: str, cursor: FeedCursor, *, fence: Fence | None = None
) -> None:
    """Store the cursor (monotonic: an older cursor never overwrites a newer one).

    With ``fence`` (the relay always passes its lease's) the write happens only while
    the destination's lease row still holds that epoch and checkpoint name, and
    LeaseLost is raised otherwise. Without it the write is unconditional: for tools
    that seed a checkpoint before any relay runs.
    """
    params = {"name": relay_name, "epoch": cursor.epoch, "tx": cursor.tx_id, "pos": cursor.position}
    if fence is None:
        async with pool.connection() as conn:
            await conn.execute(SAVE_CHECKPOINT, params)
        return
    async with pool.connection() as conn:
        cur = await conn.execute(
            SAVE_FENCED_CHECKPOINT,
            {**params, "dest": fence.destination, "lease_epoch": fence.epoch},
        )
        row = await cur.fetchone()
    if row is None or int(row[0]) != fence.epoch:
        now = "gone" if row is None else f"at epoch {row[0]}"
        raise LeaseLost(
            f"checkpoint of {fence.destination} refused: written under epoch {fence.epoch}, "
            f"the lease is {now}"
        )


_UPSERT = """
ON CONFLICT (relay_name) DO UPDATE
SET epoch = EXCLUDED.epoch, tx_id = EXCLUDED.tx_id, position = EXCLUDED.position,
    updated_at = now()
WHERE (relay_checkpoints.epoch, relay_checkpoints.tx_id, relay_checkpoints.position)
    < (EXCLUDED.epoch, EXCLUDED.tx_id, EXCLUDED.position)
"""
SAVE_CHECKPOINT = (
    "INSERT INTO relay_checkpoints (relay_name, epoch, tx_id, position) "
    "VALUES (%(name)s, %(epoch)s, %(tx)s, %(pos)s)" + _UPSERT
)
#: Why one statement with the epoch check FOR SHARE: a takeover locks the lease row
#: FOR UPDATE to bump the epoch (``streaming.lease``), so this write either commits
#: before the new epoch exists (and the new holder reads the checkpoint after it) or
#: sees the new epoch and writes nothing; never both relays' writes interleaved. The
#: data-modifying CTE runs whether or not the outer SELECT reads it; the outer SELECT
#: reports the epoch found (no row: the lease row is gone or names another checkpoint).
SAVE_FENCED_CHECKPOINT = (
    "WITH fence AS (SELECT epoch FROM relay_leases WHERE destination = %(dest)s "
    "AND relay_name = %(name)s FOR SHARE), saved AS ("
    "INSERT INTO relay_checkpoints (relay_name, epoch, tx_id, position) "
    "SELECT %(name)s, %(epoch)s, %(tx)s, %(pos)s FROM fence "
    "WHERE fence.epoch = %(lease_epoch)s" + _UPSERT + ") SELECT epoch FROM fence"
)


async def relay_lag(store: EventStore, relay_name: str = "main") -> Lag:
    """Events not yet confirmed by the transport, and the age of the oldest of them.

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


def _rabbit_errors() -> tuple[type[BaseException], ...]:
    from aio_pika.exceptions import AMQPError
    from aiormq.exceptions import AMQPError as AiormqError
    from aiormq.exceptions import ChannelInvalidStateError

    # ChannelInvalidStateError: an ack or publish on a channel the broker closed
    return (AMQPError, AiormqError, ChannelInvalidStateError, ConnectionError)


#: Failures of the infrastructure (not of the data): wait and resume from the checkpoint.
RETRYABLE: tuple[type[BaseException], ...] = (
    KafkaError,
    *_rabbit_errors(),
    OSError,
    TimeoutError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
)


class Relay:
    """Publishes the store's feed to the chosen transport from its checkpoint.

    With a ``lease`` it first stands by until it holds the destination's lease,
    publishes while it holds it, and stands by again when it loses it; without one
    (benchmarks, tools) it publishes at once and its checkpoint writes are unfenced.
    """

    def __init__(
        self,
        store: PostgresEventStore,
        settings: Settings,
        *,
        publisher: Callable[[], Publisher] | None = None,
        after_publish: AfterPublish | None = None,
        lease: RelayLease | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.make_publisher = publisher or (lambda: make_publisher(settings, store.pool))
        self.after_publish = after_publish
        self.lease = lease
        self.published = 0
        self.cursor = START
        self.horizon_held_s = 0.0
        self._horizon_checked = 0.0

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set; survives broker outages by backing off."""
        stop = stop or asyncio.Event()
        s = self.settings
        delay = s.relay_backoff_initial_s
        try:
            while not stop.is_set():
                try:
                    if self.lease is not None and not self.lease.alive():
                        await self.lease.release()
                        if await self.lease.acquire(stop) is None:
                            return
                    # Why reload the cursor each time: after a failed batch some of its
                    # events may be in Kafka and some not; re-sending from the stored
                    # cursor covers the missing ones and consumers drop the duplicates.
                    # After a takeover it is where the previous holder's last confirmed
                    # batch ended: its unconfirmed ones are sent again, nothing skipped.
                    self.cursor = await load_checkpoint(self.store.pool, s.relay_name)
                    await self._publish_until(stop)
                    if self.lease is None or self.lease.alive():
                        return
                except LeaseLost as exc:
                    # Another relay took over while this one was publishing (its lock
                    # session ended while it was paused or cut off): stand by again.
                    if self.lease is not None:
                        log.warning("relay %s: lost the lease (%s)", self.lease.holder, exc)
                        self.lease.lost.set()
                except RETRYABLE as exc:
                    if (fatal := await why_refused(s, exc)) is not None:
                        raise fatal from None
                    # The broker or PostgreSQL is away (broker restart, database
                    # restart): back off and resume from the checkpoint; never exit.
                    # The lease is kept while its heartbeat holds (a standby could do
                    # no better with the same broker); PostgreSQL restarting ends it.
                    log.warning("relay: %s (%s); retrying in %.1fs", type(exc).__name__, exc, delay)
                    await _sleep_or_stop(stop, delay)
                    delay = min(delay * 2, s.relay_backoff_max_s)
        finally:
            if self.lease is not None:
                await self.lease.release()

    def _halted(self, stop: asyncio.Event) -> bool:
        return stop.is_set() or (self.lease is not None and self.lease.lost.is_set())

    async def _publish_until(self, stop: asyncio.Event) -> None:
        s = self.settings
        publisher = self.make_publisher()
        # Batches sent and not yet confirmed, oldest first. Why at most two: reading and
        # sending the next batch while the broker acknowledges this one hides a round
        # trip; more would only grow what a crash makes us re-send.
        inflight: collections.deque[tuple[list[EncodedEvent], Awaitable[None]]] = (
            collections.deque()
        )
        read_to = self.cursor
        try:
            await publisher.start()
            while not self._halted(stop):
                # Why encoded by the store: the envelope is built once, in SQL, and
                # sent as it comes (no parse of ``data`` and no re-encoding here).
                batch = await self.store.read_feed_encoded(read_to, s.relay_batch_size)
                if batch:
                    inflight.append((batch, await publisher.send(batch)))
                    read_to = batch[-1].cursor
                if inflight and (len(inflight) > 1 or not batch):
                    await self._confirm(*inflight.popleft())
                if not batch and not inflight:
                    await self._watch_horizon()
                    await _sleep_or_stop(stop, s.relay_poll_interval_s)
            # Why confirm what is in flight even when the lease was lost: the fence
            # decides. Nobody took over yet: the checkpoint is true and saves the next
            # holder a re-send. Somebody did: LeaseLost, and the checkpoint is theirs.
            while inflight:
                await self._confirm(*inflight.popleft())
        finally:
            await publisher.close()

    async def _confirm(self, batch: list[EncodedEvent], confirmed: Awaitable[None]) -> None:
        # Why wait for every confirmation before the checkpoint: the checkpoint is the
        # promise that everything before it is in the broker. Batches are confirmed
        # and checkpointed in the order they were sent.
        await confirmed
        if self.after_publish is not None:
            await self.after_publish(batch)
        fence = self.lease.fence if self.lease is not None else None
        if self.lease is not None and fence is None:
            raise LeaseLost("the lease was released before the checkpoint")
        await save_checkpoint(
            self.store.pool, self.settings.relay_name, batch[-1].cursor, fence=fence
        )
        self.cursor = batch[-1].cursor
        self.published += len(batch)

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


async def run_relay(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    after_publish: AfterPublish | None = None,
) -> None:
    """Process entry point: migrate, connect, then stand by or relay until ``stop``.

    Raises LeaseRefused (before publishing anything) when another checkpoint name
    owns this relay's destination.
    """
    if not settings.database_url:
        raise ValueError("SAGAFLOW_DATABASE_URL is not set")
    make_publisher(settings)  # fails fast on embedded (no relay) or a missing broker setting
    quiet_kafka_logs()
    store = await PostgresEventStore.connect(settings.database_url, max_size=4)
    lease = RelayLease(settings, settings.database_url)
    try:
        await lease.check_owner()
        stop = stop or asyncio.Event()
        relay = Relay(store, settings, after_publish=after_publish, lease=lease)
        await run_until_stopped(relay.run(stop), stop)
    finally:
        await lease.release()
        await store.close()
