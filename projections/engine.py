"""The projector's core, shared by Kafka mode, embedded mode, replay and rebuild.

Rules this module enforces:

* **One transaction**: a batch's read-model changes, the stream watermarks and the
  source position (Kafka offset or feed cursor) commit together, so a crash neither
  loses nor double-counts an event.
* **Dedupe**: per read model, the last applied version of each stream is stored
  (``projection_watermarks``); an event at or below it is a duplicate (the relay
  publishes at least once) and changes nothing.
* **Failures**: a failing batch is split in halves until the failing message stands
  alone; it is retried with exponential backoff, then dead-lettered with its context.
  That stream's later messages are parked until the dead letter is replayed or
  skipped; every other stream keeps flowing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from eventstore.envelope import EventStoreError, RecordedEvent
from eventstore.upcasting import Upcasters
from projections.handlers import Conn, Pair, Projection

log = logging.getLogger("sagaflow.projections")

WATERMARKS = "projection_watermarks"


class BadMessage(Exception):
    """A message that can never be applied as it is: not an envelope, or undecodable."""

    def __init__(self, handler: str, reason: str) -> None:
        self.handler, self.reason = handler, reason
        super().__init__(f"{handler}: {reason}")


class HandlerError(Exception):
    """A read model's handler raised; ``projection`` names it."""

    def __init__(self, projection: str, error: BaseException) -> None:
        self.projection, self.error = projection, error
        super().__init__(f"{projection}: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class Message:
    """One input to the projector: a Kafka record or a feed event.

    ``payload`` is the raw body (the JSON envelope); ``recorded`` is set when the
    source already parsed it (embedded mode reads RecordedEvents from the store).
    """

    topic: str
    partition: int
    offset: int
    key: str | None
    payload: bytes | None = None
    recorded: RecordedEvent | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def body(self) -> bytes:
        """The envelope bytes (rendered from ``recorded`` when the source gave none)."""
        if self.payload is not None:
            return self.payload
        assert self.recorded is not None
        return json.dumps(self.recorded.envelope(), separators=(",", ":")).encode()


#: writes the source positions after a batch's messages (and when its last event was
#: recorded, for lag) inside the batch's transaction
Checkpoint = Callable[[Conn, Sequence[Message], datetime | None], Awaitable[None]]
#: publishes a dead letter (to the dead-letter topic in Kafka mode) before it is stored
DeadLetterSink = Callable[["DeadLetter"], Awaitable[None]]


@dataclass(frozen=True)
class DeadLetter:
    """A message that kept failing, with everything an operator needs to act on it."""

    consumer: str
    message: Message
    handler: str
    error: str
    attempts: int
    stream_id: str | None
    event_id: str | None
    version: int | None


@dataclass
class Stats:
    """Counters for /metrics."""

    applied: int = 0
    duplicates: int = 0
    gaps: int = 0
    parked: int = 0
    dead_lettered: int = 0
    batches: int = 0
    last: dict[str, Any] = field(default_factory=dict)


def decode_message(message: Message, upcasters: Upcasters) -> Pair:
    """The envelope and domain event of a message; BadMessage says why not."""
    recorded = message.recorded
    if recorded is None:
        try:
            raw = json.loads(message.body())
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            recorded = RecordedEvent.from_envelope(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadMessage(
                "envelope", f"not a valid event envelope: {type(exc).__name__}: {exc}"
            ) from None
    try:
        return recorded, upcasters.decode(recorded)
    except EventStoreError as exc:  # UnreadableEvent: unknown type, no upcaster, corrupt
        raise BadMessage("decode", str(exc)) from None


def stream_of(message: Message) -> str | None:
    """The stream a message belongs to (its Kafka key, which the relay sets)."""
    if message.recorded is not None:
        return message.recorded.stream_id
    return message.key


def consumer_lock_key(consumer: str) -> int:
    """Advisory lock id serialising a consumer's batches with dead-letter replay/skip."""
    return zlib.crc32(("sagaflow-projector:" + consumer).encode()) & 0x7FFFFFFF


async def apply_events(
    conn: Conn,
    projections: Sequence[Projection],
    pairs: Sequence[Pair],
    *,
    tables: Mapping[str, str] | None = None,
    watermarks: str = WATERMARKS,
    stats: Stats | None = None,
) -> None:
    """Apply ``pairs`` to every projection that follows their streams, exactly once.

    Per projection and stream, an event is applied only when its version is the next
    one after the stored watermark. A version at or below it is a duplicate; a
    version beyond the next is a gap, which the relay's at-least-once re-publish
    closes (it re-sends from its checkpoint, before the missing event), so it is
    counted and left for that re-send, never applied out of order.
    """
    if not pairs:
        return
    table_map = tables or {}
    streams = list(dict.fromkeys(r.stream_id for r, _ in pairs))
    names = [p.name for p in projections]
    # Why FOR UPDATE: during a consumer-group rebalance the old and new owner of a
    # partition may briefly overlap; locking the watermark rows serialises them so
    # the second sees the first's versions and skips instead of double-applying.
    cur = await conn.execute(
        psycopg.sql.SQL(
            "SELECT projection, stream_id, version FROM {} "
            "WHERE projection = ANY(%s) AND stream_id = ANY(%s) FOR UPDATE"
        ).format(psycopg.sql.Identifier(watermarks)),
        (names, streams),
    )
    marks: dict[tuple[str, str], int] = {(p, s): v for p, s, v in await cur.fetchall()}
    changed: dict[tuple[str, str], int] = {}
    for projection in projections:
        accepted: list[Pair] = []
        for recorded, event in pairs:
            if recorded.stream_type not in projection.stream_types:
                continue
            key = (projection.name, recorded.stream_id)
            last = marks.get(key, 0)
            if recorded.version <= last:
                if stats:
                    stats.duplicates += 1
                continue
            if recorded.version > last + 1:
                if stats:
                    stats.gaps += 1
                log.warning(
                    "%s: %s version %d arrived after version %d; waiting for the re-send",
                    projection.name,
                    recorded.stream_id,
                    recorded.version,
                    last,
                )
                continue
            marks[key] = changed[key] = recorded.version
            accepted.append((recorded, event))
        if not accepted:
            continue
        try:
            await projection.apply(conn, table_map, accepted)
        except psycopg.OperationalError:
            raise  # the database went away: not the handler's fault, not a dead letter
        except Exception as exc:
            raise HandlerError(projection.name, exc) from exc
        if stats:
            stats.applied += len(accepted)
    if changed:
        await conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO {} (projection, stream_id, version) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::int[]) "
                "ON CONFLICT (projection, stream_id) DO UPDATE SET version = EXCLUDED.version"
            ).format(psycopg.sql.Identifier(watermarks)),
            (
                [k[0] for k in changed],
                [k[1] for k in changed],
                list(changed.values()),
            ),
        )


async def open_streams(conn: Conn, consumer: str, streams: list[str]) -> set[str]:
    """Those of ``streams`` with an open dead letter (their new messages are parked)."""
    if not streams:
        return set()
    cur = await conn.execute(
        "SELECT DISTINCT stream_id FROM dead_letters "
        "WHERE consumer = %s AND status = 'open' AND stream_id = ANY(%s)",
        (consumer, streams),
    )
    return {row[0] for row in await cur.fetchall()}


async def park(conn: Conn, consumer: str, stream_id: str, message: Message) -> None:
    """Hold a message back until its stream's dead letter is resolved."""
    await conn.execute(
        'INSERT INTO parked_messages (consumer, stream_id, topic, partition, "offset", payload)'
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (consumer, stream_id, message.topic, message.partition, message.offset, message.body()),
    )


async def store_dead_letter(conn: Conn, letter: DeadLetter) -> None:
    """Record a dead letter (idempotent on its source position)."""
    msg = letter.message
    await conn.execute(
        """
        INSERT INTO dead_letters (consumer, topic, partition, "offset", stream_id, event_id,
                                  version, payload, headers, handler, error, attempts)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (consumer, topic, partition, "offset") DO NOTHING
        """,
        (
            letter.consumer,
            msg.topic,
            msg.partition,
            msg.offset,
            letter.stream_id,
            letter.event_id,
            letter.version,
            msg.body(),
            Jsonb([[k, v.decode(errors="replace")] for k, v in msg.headers]),
            letter.handler,
            letter.error,
            letter.attempts,
        ),
    )


def dead_letter_for(
    consumer: str, message: Message, handler: str, error: str, attempts: int
) -> DeadLetter:
    """A dead letter with the stream, event id and version read from the envelope if any."""
    recorded = message.recorded
    if recorded is None:
        try:
            recorded = RecordedEvent.from_envelope(json.loads(message.body()))
        except Exception:
            recorded = None
    return DeadLetter(
        consumer=consumer,
        message=message,
        handler=handler,
        error=error,
        attempts=attempts,
        stream_id=recorded.stream_id if recorded else message.key,
        event_id=str(recorded.event_id) if recorded else None,
        version=recorded.version if recorded else None,
    )


class Projector:
    """Applies batches of messages from one source partition to the read models."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        projections: Sequence[Projection],
        upcasters: Upcasters,
        *,
        consumer: str,
        retry_attempts: int = 3,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        dead_letter_sink: DeadLetterSink | None = None,
    ) -> None:
        self.pool = pool
        self.projections = list(projections)
        self.upcasters = upcasters
        self.consumer = consumer
        self.retry_attempts = retry_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.dead_letter_sink = dead_letter_sink
        self.stats = Stats()
        self.lock_key = consumer_lock_key(consumer)

    async def process(self, messages: Sequence[Message], checkpoint: Checkpoint) -> None:
        """Apply a batch with its checkpoint, exactly once.

        ``messages`` keep each source partition's order; a batch may span partitions
        (a stream lives in one partition, so its events stay in version order).

        The fast path is one transaction for the whole batch. When it fails, the
        batch is halved and each half tried in order, so the good messages commit in
        large transactions and only the failing one ends up alone, retried and
        dead-lettered. Database outages propagate: the caller restarts from the
        stored position.
        """
        if not messages:
            return
        try:
            await self._transaction(messages, checkpoint)
        except (HandlerError, BadMessage, psycopg.errors.IntegrityError) as exc:
            if len(messages) == 1:
                await self._retry_one(messages[0], checkpoint, exc)
                return
            middle = len(messages) // 2
            await self.process(messages[:middle], checkpoint)
            await self.process(messages[middle:], checkpoint)

    async def _transaction(self, messages: Sequence[Message], checkpoint: Checkpoint) -> None:
        pairs_by_message = [decode_message(m, self.upcasters) for m in messages]
        async with self.pool.connection() as conn, conn.transaction():
            # Why shared: batches of different partitions run side by side; replay and
            # skip take this lock exclusively so no message is parked behind their back.
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self.lock_key,))
            streams = list(dict.fromkeys(r.stream_id for r, _ in pairs_by_message))
            blocked = await open_streams(conn, self.consumer, streams)
            ready: list[Pair] = []
            for message, pair in zip(messages, pairs_by_message, strict=True):
                if pair[0].stream_id in blocked:
                    await park(conn, self.consumer, pair[0].stream_id, message)
                    self.stats.parked += 1
                else:
                    ready.append(pair)
            await apply_events(conn, self.projections, ready, stats=self.stats)
            await checkpoint(conn, messages, pairs_by_message[-1][0].recorded_at)
        self.stats.batches += 1
        last = pairs_by_message[-1][0]
        self.stats.last = {"global_position": last.global_position, "at": last.recorded_at}

    async def _retry_one(self, message: Message, checkpoint: Checkpoint, first: Exception) -> None:
        error: Exception = first
        attempts = 1
        delay = self.backoff_initial_s
        # Why no retry for BadMessage: its payload cannot change by waiting; retrying
        # would only delay every other stream behind it.
        while not isinstance(error, BadMessage) and attempts < self.retry_attempts:
            log.warning(
                "attempt %d of %d failed at %s[%d]@%d: %s; retrying in %.2fs",
                attempts,
                self.retry_attempts,
                message.topic,
                message.partition,
                message.offset,
                error,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)
            attempts += 1
            try:
                await self._transaction([message], checkpoint)
                return
            except (HandlerError, BadMessage, psycopg.errors.IntegrityError) as exc:
                error = exc
        await self._dead_letter(message, checkpoint, error, attempts)

    async def _dead_letter(
        self, message: Message, checkpoint: Checkpoint, error: Exception, attempts: int
    ) -> None:
        if isinstance(error, BadMessage):
            handler = error.handler
        elif isinstance(error, HandlerError):
            handler = error.projection
        else:
            handler = "database"
        letter = dead_letter_for(self.consumer, message, handler, str(error), attempts)
        log.error(
            "dead-lettering %s[%d]@%d (stream %s) after %d attempt(s): %s",
            message.topic,
            message.partition,
            message.offset,
            letter.stream_id,
            attempts,
            error,
        )
        # Why publish before storing: the stored row advances the position; a crash
        # in between re-delivers the message, which dead-letters again (the topic may
        # see it twice, the table once).
        if self.dead_letter_sink is not None:
            await self.dead_letter_sink(letter)
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self.lock_key,))
            await store_dead_letter(conn, letter)
            await checkpoint(conn, [message], None)
        self.stats.dead_lettered += 1
