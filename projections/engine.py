"""The projector's core, shared by every transport, replay and rebuild.

It speaks the event store's words (stream id, version, an opaque position token);
which transport delivered a message is the subscriber's business
(``streaming.transport``). Rules this module enforces:

* **One transaction**: a batch's read-model changes, the stream watermarks and the
  source position (when PostgreSQL keeps it) commit together, so a crash neither
  loses nor double-counts an event; brokers that own positions are acknowledged
  only after that commit.
* **Dedupe**: per read model, the last applied version of each stream is stored
  (``projection_watermarks``); an event at or below it is a duplicate (the relay
  publishes at least once) and changes nothing.
* **Gaps**: an event beyond the next version is preceded by the missing versions,
  read from the event store (the source of truth) and applied first, in order; when
  the store cannot supply them the message is dead-lettered ("gap: expected vN, got
  vM") and its stream parked. Never skipped.
* **Failures**: a failing batch is split in halves until the failing message stands
  alone; it is retried with exponential backoff (in process, or through the
  transport's delayed retry), then dead-lettered with its context. That stream's
  later messages are parked until the dead letter is replayed or skipped; every
  other stream keeps flowing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from eventstore.envelope import EventStoreError, RecordedEvent
from eventstore.postgres import declare_no_append
from eventstore.upcasting import Upcasters
from projections.handlers import Conn, Pair, Projection
from streaming.transport import Checkpoint, Message, Position, Subscriber

__all__ = [
    "BadMessage",
    "Checkpoint",
    "DeadLetter",
    "GapError",
    "HandlerError",
    "Message",
    "Position",
    "Projector",
    "Stats",
    "apply_events",
    "decode_message",
]

log = logging.getLogger("sagaflow.projections")

WATERMARKS = "projection_watermarks"
#: the stream id of the watermark that marks a read model as bootstrapped (version 0:
#: below every real event, so it never holds one back)
BOOTSTRAPPED = "$bootstrapped"


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


#: reads versions [first, last] of a stream from the event store (gap healing)
Heal = Callable[[str, int, int], Awaitable[list[RecordedEvent]]]


class GapError(BadMessage):
    """Versions missing before a message, and the event store cannot supply them."""

    def __init__(self, stream_id: str, expected: int, got: int) -> None:
        self.stream_id, self.expected, self.got = stream_id, expected, got
        super().__init__("gap", f"gap: expected v{expected}, got v{got} ({stream_id})")


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
    #: gaps met (a version beyond the next one), each healed from the store or dead-lettered
    gaps: int = 0
    #: events read from the event store to heal gaps
    gap_events_healed: int = 0
    parked: int = 0
    #: failing messages handed to the transport for a delayed retry
    retries_deferred: int = 0
    dead_lettered: int = 0
    batches: int = 0
    last: dict[str, Any] = field(default_factory=dict)


_NOT_FOLLOWED: Any = object()
"""Stands for the event of a stream no projection of this process follows."""


def decode_message(message: Message, upcasters: Upcasters) -> Pair:
    """The envelope and domain event of a message; BadMessage says why not."""
    recorded = _envelope(message)
    try:
        return recorded, upcasters.decode(recorded)
    except EventStoreError as exc:  # UnreadableEvent: unknown type, no upcaster, corrupt
        raise BadMessage("decode", str(exc)) from None


def _envelope(message: Message) -> RecordedEvent:
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
    return recorded


def stream_of(message: Message) -> str | None:
    """The stream a message belongs to (the envelope's, or what the transport said)."""
    if message.recorded is not None:
        return message.recorded.stream_id
    return message.stream_id


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
    heal: Heal | None = None,
    upcasters: Upcasters | None = None,
    blame: bool = True,
) -> None:
    """Apply ``pairs`` to every projection that follows their streams, exactly once.

    ``blame``: wait for each projection's statements before the next projection runs,
    so a failing statement is reported under its projection's name. Without it (a
    pipelined batch of many messages) a failure may surface later, under another
    name or none; the caller then splits the batch, and the message that fails
    alone is retried with ``blame`` on.

    Per projection and stream, an event is applied only when its version is the next
    one after the stored watermark. A version at or below it is a duplicate. A
    version beyond the next is a gap: ``heal`` reads the missing versions from the
    event store and they are applied first, in order; without ``heal``, or when the
    store has fewer than needed, GapError is raised (the caller dead-letters it).
    """
    if not pairs:
        return
    table_map = tables or {}
    streams = list(dict.fromkeys(r.stream_id for r, _ in pairs))
    names = [p.name for p in projections]
    # Why FOR UPDATE: during a consumer-group rebalance (or a RabbitMQ consumer
    # handover) the old and new owner of a stream may briefly overlap; locking the
    # watermark rows serialises them so the second sees the first's versions and
    # skips instead of double-applying.
    cur = await conn.execute(
        psycopg.sql.SQL(
            "SELECT projection, stream_id, version FROM {} "
            "WHERE projection = ANY(%s) AND stream_id = ANY(%s) FOR UPDATE"
        ).format(psycopg.sql.Identifier(watermarks)),
        (names, streams),
    )
    marks: dict[tuple[str, str], int] = {(p, s): v for p, s, v in await cur.fetchall()}
    changed: dict[tuple[str, str], int] = {}
    healed: dict[tuple[str, int, int], list[Pair]] = {}
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
                missing = (recorded.stream_id, last + 1, recorded.version - 1)
                if missing not in healed:
                    healed[missing] = await _heal_gap(missing, heal, upcasters, stats)
                    # a gap is counted once per transaction, whatever the projections
                    await _count(
                        conn, {"gaps_healed": 1, "gap_events_healed": len(healed[missing])}
                    )
                accepted.extend(healed[missing])
            marks[key] = changed[key] = recorded.version
            accepted.append((recorded, event))
        if not accepted:
            continue
        try:
            # Why a (nested) pipeline block per projection when blaming: its exit
            # waits for every statement the handler queued, so a failing one is
            # reported with this projection's name, not the next one's.
            if blame:
                async with conn.pipeline():
                    await projection.apply(conn, table_map, accepted)
            else:
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


async def _count(conn: Conn, increments: Mapping[str, int]) -> None:
    await conn.execute(
        "INSERT INTO projection_counters (name, value) "
        "SELECT * FROM unnest(%s::text[], %s::bigint[]) "
        "ON CONFLICT (name) DO UPDATE SET value = projection_counters.value + EXCLUDED.value",
        (list(increments), list(increments.values())),
    )


async def _heal_gap(
    missing: tuple[str, int, int],
    heal: Heal | None,
    upcasters: Upcasters | None,
    stats: Stats | None,
) -> list[Pair]:
    stream_id, first, last = missing
    if stats:
        stats.gaps += 1
    found = await heal(stream_id, first, last) if heal and upcasters else []
    versions = [r.version for r in found]
    if versions != list(range(first, last + 1)):
        raise GapError(stream_id, first, last + 1)
    assert upcasters is not None
    log.warning("%s: versions %d..%d healed from the event store", stream_id, first, last)
    if stats:
        stats.gap_events_healed += len(found)
    try:
        return [(r, upcasters.decode(r)) for r in found]
    except EventStoreError as exc:
        raise BadMessage("decode", f"healing {stream_id}: {exc}") from None


async def open_streams(conn: Conn, consumer: str, streams: list[str]) -> dict[str, int | None]:
    """Those of ``streams`` whose new messages are parked, with the version let through.

    A stream with an open dead letter lets nothing through (``None``); a stream whose
    failing message waits for a delayed retry lets only that version through.
    """
    if not streams:
        return {}
    cur = await conn.execute(
        "SELECT stream_id, NULL::int FROM dead_letters "
        "WHERE consumer = %s AND status = 'open' AND stream_id = ANY(%s) "
        "UNION ALL SELECT stream_id, version FROM projection_retries "
        "WHERE consumer = %s AND stream_id = ANY(%s)",
        (consumer, streams, consumer, streams),
    )
    held: dict[str, int | None] = {}
    for stream_id, version in await cur.fetchall():
        # an open dead letter wins over a retry hold: nothing passes
        held[stream_id] = None if stream_id in held or version is None else version
    return held


async def park(conn: Conn, consumer: str, stream_id: str, message: Message) -> None:
    """Hold a message back until its stream's dead letter (or retry) is resolved."""
    await conn.execute(
        "INSERT INTO parked_messages (consumer, stream_id, position, payload)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (consumer, stream_id, message.position.token(), message.body()),
    )


async def store_dead_letter(conn: Conn, letter: DeadLetter) -> None:
    """Record a dead letter (idempotent on its source position)."""
    msg = letter.message
    await conn.execute(
        """
        INSERT INTO dead_letters (consumer, position, stream_id, event_id,
                                  version, payload, headers, handler, error, attempts)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (consumer, position) DO NOTHING
        """,
        (
            letter.consumer,
            msg.position.token(),
            letter.stream_id,
            letter.event_id,
            letter.version,
            msg.body(),
            Jsonb([[k, v.decode(errors="replace")] for k, v in msg.header_pairs()]),
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
        stream_id=recorded.stream_id if recorded else message.stream_id,
        event_id=str(recorded.event_id) if recorded else None,
        version=recorded.version if recorded else None,
    )


_FAILURES = (HandlerError, BadMessage, psycopg.errors.IntegrityError)


class Projector:
    """Applies batches of messages from a subscriber to the read models."""

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
        subscriber: Subscriber | None = None,
        heal: Heal | None = None,
    ) -> None:
        self.pool = pool
        self.projections = list(projections)
        self.upcasters = upcasters
        self.consumer = consumer
        self.retry_attempts = retry_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.subscriber = subscriber
        self.heal = heal
        self.stats = Stats()
        self.lock_key = consumer_lock_key(consumer)
        #: the stream types some projection of this process follows
        self.followed = frozenset(t for p in self.projections for t in p.stream_types)

    def _decode(self, recorded: RecordedEvent) -> Any:
        try:
            return self.upcasters.decode(recorded)
        except EventStoreError as exc:  # UnreadableEvent: unknown type, no upcaster, corrupt
            raise BadMessage("decode", str(exc)) from None

    async def process(self, messages: Sequence[Message], checkpoint: Checkpoint) -> None:
        """Apply a batch with its checkpoint, exactly once.

        ``messages`` keep each stream's order (a stream lives in one partition or
        shard). The fast path is one transaction for the whole batch. When it fails,
        the batch is halved and each half tried in order, so the good messages commit
        in large transactions and only the failing one ends up alone, retried and
        dead-lettered. Database outages propagate: the caller restarts from the
        stored position (or the broker redelivers what was not acknowledged).
        """
        if not messages:
            return
        try:
            await self._transaction(messages, checkpoint)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            # Why split on any statement error of a batch: pipelined without blame, a
            # handler's failing statement may surface after its handler returned
            # (at another's, or at the commit); alone, it is blamed and dead-lettered.
            if len(messages) == 1 and not isinstance(exc, _FAILURES):
                raise
            await self._split(messages, checkpoint, exc)
        except _FAILURES as exc:
            await self._split(messages, checkpoint, exc)

    async def _split(
        self, messages: Sequence[Message], checkpoint: Checkpoint, exc: Exception
    ) -> None:
        """Halve a failed batch, or retry and dead-letter the message that failed alone."""
        if len(messages) == 1:
            await self._retry_one(messages[0], checkpoint, exc)
            return
        middle = len(messages) // 2
        await self.process(messages[:middle], checkpoint)
        await self.process(messages[middle:], checkpoint)

    async def _transaction(self, messages: Sequence[Message], checkpoint: Checkpoint) -> None:
        # Why envelopes only for streams no projection follows: their event classes
        # may live in modules this process never imports (a team's own saga type);
        # decoding them would dead-letter events nothing here needs.
        followed = self.followed
        pairs_by_message: list[tuple[RecordedEvent, Any]] = []
        for m in messages:
            recorded = _envelope(m)  # parsed once: it is most of a message's cost
            pairs_by_message.append(
                (recorded, self._decode(recorded))
                if recorded.stream_type in followed
                else (recorded, _NOT_FOLLOWED)
            )
        # Why pipeline mode: statements whose results nobody reads (the lock, parking,
        # upserts, watermarks, the checkpoint) are sent without waiting for each reply,
        # so a batch costs a few round trips instead of one per statement. That keeps
        # the transaction short, and an open transaction holding a transaction id holds
        # back the event feed for the relay (the feed is read below the oldest one).
        # The server still runs the statements in order, each after the one before.
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            # First: this batch never appends, so the feed need not wait for it.
            await declare_no_append(conn)
            # Why shared: batches of different partitions run side by side; replay and
            # skip take this lock exclusively so no message is parked behind their back.
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self.lock_key,))
            streams = list(dict.fromkeys(r.stream_id for r, _ in pairs_by_message))
            held = await open_streams(conn, self.consumer, streams)
            ready: list[Pair] = []
            retried: set[str] = set()
            for message, pair in zip(messages, pairs_by_message, strict=True):
                stream = pair[0].stream_id
                if stream in held and (held[stream] is None or held[stream] != pair[0].version):
                    await park(conn, self.consumer, stream, message)
                    self.stats.parked += 1
                    continue
                if stream in held:
                    retried.add(stream)  # the delayed retry of the held message itself
                if pair[1] is not _NOT_FOLLOWED:
                    ready.append(pair)
            await apply_events(
                conn,
                self.projections,
                ready,
                stats=self.stats,
                heal=self.heal,
                upcasters=self.upcasters,
                # one round trip less per read model; a batch that fails is split,
                # and a message failing alone is retried with the blame exact
                blame=len(messages) == 1,
            )
            for stream in retried:
                await self._release_hold(conn, stream)
            await checkpoint(conn, messages, pairs_by_message[-1][0].recorded_at)
        self.stats.batches += 1
        last = pairs_by_message[-1][0]
        self.stats.last = {"global_position": last.global_position, "at": last.recorded_at}

    async def _release_hold(self, conn: Conn, stream: str) -> None:
        """The retried message applied: lift the hold, apply what its stream parked."""
        from projections.deadletters import release_parked

        await conn.execute(
            "DELETE FROM projection_retries WHERE consumer = %s AND stream_id = %s",
            (self.consumer, stream),
        )
        await release_parked(conn, self.consumer, stream, self.projections, self.upcasters)

    async def _retry_one(self, message: Message, checkpoint: Checkpoint, first: Exception) -> None:
        sub = self.subscriber
        if sub is not None and sub.deferred_retry and not isinstance(first, BadMessage):
            await self._retry_later(sub, message, checkpoint, first)
            return
        error: Exception = first
        attempts = 1
        delay = self.backoff_initial_s
        # Why no retry for BadMessage: its payload cannot change by waiting; retrying
        # would only delay every other stream behind it.
        while not isinstance(error, BadMessage) and attempts < self.retry_attempts:
            log.warning(
                "attempt %d of %d failed at %s: %s; retrying in %.2fs",
                attempts,
                self.retry_attempts,
                message.position.token(),
                error,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)
            attempts += 1
            try:
                await self._transaction([message], checkpoint)
                return
            except _FAILURES as exc:
                error = exc
        await self._dead_letter(message, checkpoint, error, attempts)

    async def _retry_later(
        self, sub: Subscriber, message: Message, checkpoint: Checkpoint, error: Exception
    ) -> None:
        """Hand the message back to the transport for a delayed attempt, holding its stream.

        Why hold: the transport keeps delivering the stream's later events while this
        one waits in a retry queue; applying them first would break the stream's order,
        so they are parked until the retry succeeds (or becomes a dead letter).
        """
        attempts = message.attempt
        if attempts >= self.retry_attempts:
            await self._dead_letter(message, checkpoint, error, attempts)
            return
        letter = dead_letter_for(self.consumer, message, "", "", attempts)
        delay = min(self.backoff_initial_s * 2 ** (attempts - 1), self.backoff_max_s)
        log.warning(
            "attempt %d of %d failed at %s: %s; retrying through the transport in %.2fs",
            attempts,
            self.retry_attempts,
            message.position.token(),
            error,
            delay,
        )
        if letter.stream_id is not None and letter.version is not None:
            async with self.pool.connection() as conn, conn.transaction():
                await declare_no_append(conn)
                await conn.execute(
                    "INSERT INTO projection_retries (consumer, stream_id, version, attempts, error)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (consumer, stream_id) DO UPDATE"
                    " SET attempts = EXCLUDED.attempts, error = EXCLUDED.error,"
                    " updated_at = now()",
                    (self.consumer, letter.stream_id, letter.version, attempts, str(error)),
                )
                await checkpoint(conn, [message], None)
        # Why after the commit: if we die before this publish, the broker redelivers the
        # unacknowledged original, which the hold lets through and which fails again.
        await sub.retry_later(message, attempts, delay)
        self.stats.retries_deferred += 1

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
            "dead-lettering %s (stream %s) after %d attempt(s): %s",
            message.position.token(),
            letter.stream_id,
            attempts,
            error,
        )
        # Why publish before storing: the stored row advances the position; a crash
        # in between re-delivers the message, which dead-letters again (the broker's
        # dead-letter destination may see it twice, the table once).
        if self.subscriber is not None:
            await self.subscriber.publish_dead_letter(
                message,
                {
                    "dlt.error": letter.error,
                    "dlt.handler": letter.handler,
                    "dlt.attempts": str(letter.attempts),
                    "dlt.consumer": letter.consumer,
                    "dlt.position": message.position.token(),
                },
            )
        async with self.pool.connection() as conn, conn.transaction():
            await declare_no_append(conn)
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self.lock_key,))
            await store_dead_letter(conn, letter)
            if letter.stream_id is not None:
                # the stream's retry hold (if any) becomes the dead letter's parking
                await conn.execute(
                    "DELETE FROM projection_retries WHERE consumer = %s AND stream_id = %s",
                    (self.consumer, letter.stream_id),
                )
            await checkpoint(conn, [message], None)
        self.stats.dead_lettered += 1
