"""The projector process: one subscriber of the chosen transport feeding the Projector.

Every transport hands batches to the same ``Projector`` with a checkpoint written in
the batch's transaction (Kafka offsets, the feed cursor) or an acknowledgement after
it (RabbitMQ). Before following the transport, read models that never caught up
(added later, or their positions lost) bootstrap from the event store; gaps are
healed from the store too. A broker's own committed offsets are never trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from eventstore.envelope import START, RecordedEvent
from eventstore.migrate import psycopg_url, upgrade
from eventstore.postgres import PostgresEventStore
from eventstore.upcasting import Upcasters
from projections.engine import BOOTSTRAPPED, Heal, Message, Position, Projector
from projections.handlers import Projection, default_projections
from sagaflow.settings import Settings, Transport
from streaming.embedded import FEED_SOURCE, load_feed_checkpoint
from streaming.kafka import quiet_kafka_logs, run_until_stopped
from streaming.relay import RETRYABLE, feed_lag, relay_lag
from streaming.transport import (
    Batch,
    Subscriber,
    make_subscriber,
    no_checkpoint,
    transport_backlog,
    why_refused,
)

log = logging.getLogger("sagaflow.projector")


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


def store_healer(store: PostgresEventStore) -> Heal:
    """Reads a stream's missing versions from the event store (the source of truth)."""

    async def heal(stream_id: str, first: int, last: int) -> list[RecordedEvent]:
        return [e for e in await store.read_stream(stream_id, first) if e.version <= last]

    return heal


def build_projector(
    settings: Settings,
    pool: AsyncConnectionPool,
    store: PostgresEventStore,
    projections: Sequence[Projection],
    subscriber: Subscriber | None,
) -> Projector:
    """The Projector of this process, with the settings' retries and gap healing."""
    return Projector(
        pool,
        projections,
        store.upcasters,
        consumer=settings.projector_group,
        retry_attempts=settings.projector_retry_attempts,
        backoff_initial_s=settings.projector_backoff_initial_s,
        backoff_max_s=settings.projector_backoff_max_s,
        subscriber=subscriber,
        heal=store_healer(store),
    )


async def needs_bootstrap(
    pool: AsyncConnectionPool, projections: Sequence[Projection]
) -> list[str]:
    """Read models that never caught up from the store, or whose positions are gone.

    A read model's positions are its per-stream watermarks: none at all means it
    has never applied anything (added later, or its rows were lost).
    """
    names = [p.name for p in projections]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT n FROM unnest(%s::text[]) AS n WHERE n NOT IN "
            "(SELECT projection FROM projection_bootstraps) OR NOT EXISTS "
            "(SELECT 1 FROM projection_watermarks w WHERE w.projection = n)",
            (names,),
        )
        return [row[0] for row in await cur.fetchall()]


async def bootstrap_projections(
    settings: Settings,
    store: PostgresEventStore,
    pool: AsyncConnectionPool,
    projections: Sequence[Projection],
    subscriber: Subscriber,
) -> int:
    """Catch new read models up from the event store; returns the events read.

    Skipped when the group has no position yet and the transport still holds every
    record from the beginning (it will deliver them all). Otherwise the whole feed is
    applied to the new read models only, through the Projector (so a failing event is
    retried and dead-lettered, never skipped). Why "no gap, no double count" holds
    afterwards: the transport's later deliveries of the same events are at or below
    the watermarks written here (duplicates), anything newer is the next version (or
    a gap healed from the store).
    """
    wanted = await needs_bootstrap(pool, projections)
    if not wanted:
        return 0
    done = 0
    if not await subscriber.replays_from_start():
        chosen = [p for p in projections if p.name in wanted]
        log.info("bootstrapping %s from the event store", ", ".join(sorted(wanted)))
        projector = build_projector(settings, pool, store, chosen, None)
        cursor = START
        while batch := await store.read_feed(cursor, settings.projector_batch_size):
            messages = [
                Message(Position(FEED_SOURCE, 0, e.global_position), e.stream_id, recorded=e)
                for e in batch
            ]
            await projector.process(messages, no_checkpoint)
            cursor = batch[-1].cursor
            done += len(batch)
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO projection_bootstraps (projection) SELECT unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING",
            (sorted(wanted),),
        )
        # Why a sentinel watermark: a read model whose streams have no events yet (no
        # returns so far) has no watermark after its bootstrap, which looks exactly
        # like lost positions; without it, every start would read the whole feed
        # again. Losing the watermarks still loses the sentinel, so that is still seen.
        await conn.execute(
            "INSERT INTO projection_watermarks (projection, stream_id, version) "
            "SELECT unnest(%s::text[]), %s, 0 ON CONFLICT DO NOTHING",
            (sorted(wanted), BOOTSTRAPPED),
        )
    return done


async def follow(
    settings: Settings,
    store: PostgresEventStore,
    pool: AsyncConnectionPool,
    projections: Sequence[Projection],
    stop: asyncio.Event,
) -> Projector:
    """Bootstrap what needs it, then apply the transport's batches until ``stop``."""
    subscriber = make_subscriber(settings, pool, store)
    await bootstrap_projections(settings, store, pool, projections, subscriber)
    projector = build_projector(settings, pool, store, projections, subscriber)

    async def deliver(batch: Batch) -> None:
        await projector.process(batch.messages, batch.checkpoint)
        if batch.settle is not None:
            # Why after process(): every message is committed, dead-lettered or held
            # for a delayed retry in PostgreSQL; only now may the broker forget it.
            await batch.settle()

    await subscriber.run(deliver, stop)
    return projector


# --- process entry ------------------------------------------------------------------------


async def run_projector(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    projections: Sequence[Projection] | None = None,
    upcasters: Upcasters | None = None,
) -> None:
    """Process entry point: the subscriber of SAGAFLOW_TRANSPORT feeding the read models.

    A broker or database outage stops the subscriber; it is restarted with backoff
    and resumes from the positions stored in PostgreSQL (or what the broker redelivers).
    """
    if not settings.database_url:
        raise ValueError("SAGAFLOW_DATABASE_URL is not set")
    stop = stop or asyncio.Event()
    chosen = list(projections) if projections is not None else default_projections()
    quiet_kafka_logs()
    pool = await open_pool(settings.database_url)
    try:
        store = await PostgresEventStore.connect(
            settings.database_url, migrate=False, max_size=2, upcasters=upcasters
        )
        try:
            await run_until_stopped(
                _retry_forever(lambda: follow(settings, store, pool, chosen, stop), settings, stop),
                stop,
            )
        finally:
            await store.close()
    finally:
        await pool.close()


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
            if (fatal := await why_refused(settings, exc)) is not None:
                raise fatal from None
            log.warning("projector: %s (%s); restarting in %.1fs", type(exc).__name__, exc, delay)
        except asyncio.CancelledError:
            # Why: a CancelledError that is not ours (no stop, nobody cancelled this
            # task) escaped the Kafka client's own tasks; taken as a shutdown, the
            # projector process would exit 0 and follow nothing more. Seen on the
            # three-broker cluster: retried like a broker error.
            me = asyncio.current_task()
            if stop.is_set() or (me is not None and me.cancelling()):
                raise
            log.warning("projector: cancelled from inside the client; restarting in %.1fs", delay)
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


async def streams_behind(store: PostgresEventStore, settings: Settings) -> int:
    """How many (read model, stream) pairs have stored events the model has not applied,
    streams held back on purpose (parked, in a retry, dead-lettered) excepted.

    Why next to :func:`projector_lag`: on RabbitMQ the broker counts only messages not
    yet delivered, so deliveries in flight (prefetched, not yet committed) read as "no
    backlog", and so does a shard queue that cannot be declared yet after a restart. Whoever
    must know the read models are complete (tests, the reliability oracle) checks the
    watermarks against the store with this. It scans the events table: not for the
    hot path.
    """
    group = settings.projector_group
    behind = 0
    async with store.pool.connection() as conn:
        for projection in default_projections():
            cur = await conn.execute(
                """
                SELECT count(*) FROM (
                    SELECT stream_id, max(version) AS v FROM events
                    WHERE stream_type = ANY(%s) GROUP BY stream_id) e
                LEFT JOIN projection_watermarks w
                  ON w.projection = %s AND w.stream_id = e.stream_id
                WHERE coalesce(w.version, 0) < e.v
                  AND e.stream_id NOT IN (SELECT stream_id FROM parked_messages
                                          WHERE consumer = %s)
                  AND e.stream_id NOT IN (SELECT stream_id FROM projection_retries
                                          WHERE consumer = %s)
                  AND e.stream_id NOT IN (SELECT stream_id FROM dead_letters
                                          WHERE consumer = %s AND status = 'open'
                                          AND stream_id IS NOT NULL)
                """,
                (sorted(projection.stream_types), projection.name, group, group, group),
            )
            row = await cur.fetchone()
            behind += int(row[0]) if row else 0
    return behind


async def projector_lag(store: PostgresEventStore, settings: Settings) -> ProjectorLag:
    """Lag of the read models behind the store, for /metrics and API backpressure.

    Embedded: measured on the feed from the projector's cursor. With a broker: the
    relay's lag plus what the transport still holds for the projector group.
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
    if settings.transport_kind is Transport.EMBEDDED:
        lag = await feed_lag(store, await load_feed_checkpoint(pool, group))
        return ProjectorLag(lag.events, lag.seconds, letters, parked)
    relay = await relay_lag(store, settings.relay_name)
    backlog = await transport_backlog(settings, pool)
    seconds = relay.seconds
    if backlog.messages and backlog.last_applied_at is not None:
        seconds = max(seconds, (datetime.now(UTC) - backlog.last_applied_at).total_seconds())
    return ProjectorLag(relay.events + backlog.messages, seconds, letters, parked)
