"""Dead letters: list them, replay them (after a fix) or skip them, then release the
messages their stream parked meanwhile, in arrival order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from eventstore.postgres import declare_no_append
from eventstore.upcasting import Upcasters
from projections.engine import (
    BadMessage,
    HandlerError,
    Message,
    Position,
    apply_events,
    consumer_lock_key,
    dead_letter_for,
    decode_message,
    store_dead_letter,
)
from projections.handlers import Conn, Projection


class DeadLetterError(Exception):
    """A dead letter that does not exist, is already resolved, or fails again on replay."""


@dataclass(frozen=True)
class DeadLetterInfo:
    """A dead letter as operators and the API see it."""

    id: int
    consumer: str
    #: where the transport delivered it from (``Position.token()``)
    position: str
    stream_id: str | None
    event_id: str | None
    version: int | None
    handler: str
    error: str
    attempts: int
    status: str
    created_at: datetime
    resolved_at: datetime | None
    parked: int


@dataclass(frozen=True)
class Resolution:
    """What a replay or skip did: the parked messages released and any new dead letter."""

    dead_letter_id: int
    status: str
    released: int
    still_parked: int
    new_dead_letter: str | None = None


async def list_dead_letters(
    pool: AsyncConnectionPool, *, status: str | None = "open", consumer: str | None = None
) -> list[DeadLetterInfo]:
    """Dead letters (open ones by default), oldest first, with their parked counts."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            """
            SELECT d.id, d.consumer, d.position, d.stream_id,
                   d.event_id::text AS event_id, d.version, d.handler, d.error, d.attempts,
                   d.status, d.created_at, d.resolved_at,
                   (SELECT count(*) FROM parked_messages p
                     WHERE p.consumer = d.consumer AND p.stream_id = d.stream_id) AS parked
            FROM dead_letters d
            WHERE (%(status)s::text IS NULL OR d.status = %(status)s)
              AND (%(consumer)s::text IS NULL OR d.consumer = %(consumer)s)
            ORDER BY d.id
            """,
            {"status": status, "consumer": consumer},
        )
        return [DeadLetterInfo(**row) for row in await cur.fetchall()]


async def replay_dead_letter(
    pool: AsyncConnectionPool,
    dead_letter_id: int,
    projections: Sequence[Projection],
    upcasters: Upcasters,
) -> Resolution:
    """Apply the dead letter now (with today's code), then its stream's parked messages.

    Atomic: if the dead letter fails again nothing changes and DeadLetterError says why.
    """
    return await _resolve(pool, dead_letter_id, projections, upcasters, replay=True)


async def skip_dead_letter(
    pool: AsyncConnectionPool,
    dead_letter_id: int,
    projections: Sequence[Projection],
    upcasters: Upcasters,
) -> Resolution:
    """Give up on the dead letter (never applied) and release its stream's parked messages."""
    return await _resolve(pool, dead_letter_id, projections, upcasters, replay=False)


async def _resolve(
    pool: AsyncConnectionPool,
    dead_letter_id: int,
    projections: Sequence[Projection],
    upcasters: Upcasters,
    *,
    replay: bool,
) -> Resolution:
    async with pool.connection() as conn, conn.transaction():
        await declare_no_append(conn)
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT consumer, status FROM dead_letters WHERE id = %s", (dead_letter_id,)
        )
        found = await cur.fetchone()
        if found is None:
            raise DeadLetterError(f"no dead letter {dead_letter_id}")
        # Why exclusive: the projector takes this lock shared per batch, so no message
        # of the stream can be parked after we read the parked list and before we commit.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", (consumer_lock_key(found["consumer"]),)
        )
        await cur.execute("SELECT * FROM dead_letters WHERE id = %s FOR UPDATE", (dead_letter_id,))
        row = await cur.fetchone()
        assert row is not None
        if row["status"] != "open":
            raise DeadLetterError(f"dead letter {dead_letter_id} is already {row['status']}")
        message = _message(row)
        if replay:
            try:
                await apply_events(conn, projections, [decode_message(message, upcasters)])
            except (BadMessage, HandlerError) as exc:
                raise DeadLetterError(f"dead letter {dead_letter_id} failed again: {exc}") from exc
        elif row["stream_id"] and row["version"]:
            await _advance_watermarks(conn, projections, row)
        await conn.execute(
            "UPDATE dead_letters SET status = %s, resolved_at = now() WHERE id = %s",
            ("replayed" if replay else "skipped", dead_letter_id),
        )
        released, still, new_letter = await release_parked(
            conn, row["consumer"], row["stream_id"], projections, upcasters
        )
    return Resolution(
        dead_letter_id, "replayed" if replay else "skipped", released, still, new_letter
    )


async def _advance_watermarks(
    conn: Conn, projections: Sequence[Projection], row: dict[str, Any]
) -> None:
    # A skipped event is never applied, so the stream's next version must be accepted.
    stream_type = _stream_type(row)
    names = [p.name for p in projections if stream_type is None or stream_type in p.stream_types]
    await conn.execute(
        """
        INSERT INTO projection_watermarks (projection, stream_id, version)
        SELECT unnest(%s::text[]), %s, %s
        ON CONFLICT (projection, stream_id) DO UPDATE
        SET version = greatest(projection_watermarks.version, EXCLUDED.version)
        """,
        (names, row["stream_id"], row["version"]),
    )


def _stream_type(row: dict[str, Any]) -> str | None:
    import json

    try:
        return str(json.loads(bytes(row["payload"]))["stream_type"])
    except Exception:
        return None


async def release_parked(
    conn: Conn,
    consumer: str,
    stream_id: str | None,
    projections: Sequence[Projection],
    upcasters: Upcasters,
) -> tuple[int, int, str | None]:
    """Apply a stream's parked messages in arrival order inside the caller's transaction.

    Returns (released, still parked, the error of a message that failed): a failing
    one becomes a dead letter and the rest stay parked behind it.
    """
    if stream_id is None:
        return 0, 0, None
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM parked_messages WHERE consumer = %s AND stream_id = %s ORDER BY seq",
        (consumer, stream_id),
    )
    parked = await cur.fetchall()
    released = 0
    for row in parked:
        message = _message(row)
        try:
            async with conn.transaction():  # a savepoint: a failure undoes only this one
                await apply_events(conn, projections, [decode_message(message, upcasters)])
        except (BadMessage, HandlerError) as exc:
            handler = exc.handler if isinstance(exc, BadMessage) else exc.projection
            await store_dead_letter(conn, dead_letter_for(consumer, message, handler, str(exc), 1))
            await conn.execute("DELETE FROM parked_messages WHERE seq = %s", (row["seq"],))
            return released, len(parked) - released - 1, str(exc)
        await conn.execute("DELETE FROM parked_messages WHERE seq = %s", (row["seq"],))
        released += 1
    return released, 0, None


def _message(row: dict[str, Any]) -> Message:
    return Message(
        position=Position.parse(row["position"]),
        stream_id=row["stream_id"],
        payload=bytes(row["payload"]),
    )
