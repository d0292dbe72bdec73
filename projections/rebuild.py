"""Rebuild a read model from the event store into fresh tables, swapped in atomically.

Queries keep reading the live tables while the copy fills; the swap at the end
takes the locks briefly, applies whatever was appended meanwhile, renames the copy
into place and replaces the model's watermarks, all in one transaction.
No transport is read: Kafka's retention is limited, the store is the source of truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from psycopg import sql

from eventstore.envelope import START, FeedCursor, RecordedEvent
from eventstore.postgres import PostgresEventStore, declare_no_append
from projections.engine import (
    BOOTSTRAPPED,
    BadMessage,
    Message,
    Position,
    apply_events,
    decode_message,
)
from projections.handlers import Conn, Pair, Projection

SUFFIX = "__rebuild"

#: called with (events done, events in the store) after every batch
Progress = Callable[[int, int], None]


class RebuildError(Exception):
    """The rebuild met an event it cannot apply; nothing was swapped."""


async def rebuild(
    store: PostgresEventStore,
    projection: Projection,
    *,
    batch_size: int = 2000,
    progress: Progress | None = None,
) -> int:
    """Rebuild ``projection`` from the whole feed; returns the events read.

    Events whose dead letters were skipped by the live projector are skipped here
    too, so the rebuilt model equals what the live one holds.
    """
    pool = store.pool
    tables = {t: t + SUFFIX for t in projection.tables}
    marks = f"projection_watermarks{SUFFIX}_{projection.name}"
    # Why every transaction here declares it never appends: a rebuild's long batches
    # must not hold back the feed the live projector and the relay read.
    async with pool.connection() as conn, conn.transaction():
        await declare_no_append(conn)
        for live, fresh in [*tables.items(), ("projection_watermarks", marks)]:
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(fresh)))
            await conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(fresh), sql.Identifier(live)
                )
            )
        cur = await conn.execute(
            "SELECT event_id::text FROM dead_letters WHERE status = 'skipped' AND event_id IS "
            "NOT NULL"
        )
        skipped = {row[0] for row in await cur.fetchall()}
    total = (await store.feed_status()).head_position
    done = 0
    cursor = START
    while True:
        batch = await store.read_feed(cursor, batch_size)
        if not batch:
            break
        async with pool.connection() as conn, conn.transaction():
            await declare_no_append(conn)
            await _apply(conn, store, projection, batch, tables, marks, skipped)
        cursor = batch[-1].cursor
        done += len(batch)
        if progress:
            progress(done, max(total, done))
    async with pool.connection() as conn, conn.transaction():
        await declare_no_append(conn)
        # Why this lock order: the projector locks watermark rows before it writes the
        # model's tables; taking the watermarks first here too rules out a deadlock.
        await conn.execute("LOCK TABLE projection_watermarks IN EXCLUSIVE MODE")
        for live in tables:
            await conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(live))
            )
        done += await _catch_up(conn, store, projection, cursor, tables, marks, skipped)
        await _swap(conn, projection, tables, marks)
    if progress:
        progress(done, done)
    return done


async def _apply(
    conn: Conn,
    store: PostgresEventStore,
    projection: Projection,
    batch: Sequence[RecordedEvent],
    tables: dict[str, str],
    marks: str,
    skipped: set[str],
) -> None:
    pairs: list[Pair] = []
    for recorded in batch:
        if recorded.stream_type not in projection.stream_types:
            continue
        if str(recorded.event_id) in skipped:
            # As the live skip does: never applied, but the stream moves past it.
            await apply_events(conn, [projection], pairs, tables=tables, watermarks=marks)
            pairs = []
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (projection, stream_id, version) VALUES (%s, %s, %s) "
                    "ON CONFLICT (projection, stream_id) DO UPDATE SET version = EXCLUDED.version"
                ).format(sql.Identifier(marks)),
                (projection.name, recorded.stream_id, recorded.version),
            )
            continue
        message = Message(
            Position("$feed", 0, recorded.global_position), recorded.stream_id, recorded=recorded
        )
        try:
            pairs.append(decode_message(message, store.upcasters))
        except BadMessage as exc:
            raise RebuildError(f"cannot rebuild {projection.name}: {exc}") from None
    await apply_events(conn, [projection], pairs, tables=tables, watermarks=marks)


async def _catch_up(
    conn: Conn,
    store: PostgresEventStore,
    projection: Projection,
    cursor: FeedCursor,
    tables: dict[str, str],
    marks: str,
    skipped: set[str],
) -> int:
    done = 0
    while batch := await store.read_feed(cursor, 2000):
        await _apply(conn, store, projection, batch, tables, marks, skipped)
        cursor = batch[-1].cursor
        done += len(batch)
    return done


async def _swap(conn: Conn, projection: Projection, tables: dict[str, str], marks: str) -> None:
    for live, fresh in tables.items():
        await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(live)))
        await conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(fresh), sql.Identifier(live)
            )
        )
        # Index names are global: give the copy's indexes the live names back, so the
        # next rebuild's copy can take the suffixed ones again.
        cur = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = %s AND indexname LIKE %s",
            (live, f"%{SUFFIX}%"),
        )
        for (index,) in await cur.fetchall():
            await conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(index), sql.Identifier(index.replace(SUFFIX, ""))
                )
            )
    await conn.execute(
        "DELETE FROM projection_watermarks WHERE projection = %s", (projection.name,)
    )
    await conn.execute(
        sql.SQL(
            "INSERT INTO projection_watermarks (projection, stream_id, version) "
            "SELECT projection, stream_id, version FROM {}"
        ).format(sql.Identifier(marks))
    )
    # A rebuilt model is caught up by definition, even with no events to hold a
    # watermark: keep it marked so the next projector start does not bootstrap it.
    await conn.execute(
        "INSERT INTO projection_watermarks (projection, stream_id, version) "
        "VALUES (%s, %s, 0) ON CONFLICT DO NOTHING",
        (projection.name, BOOTSTRAPPED),
    )
    await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(marks)))
