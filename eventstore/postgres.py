"""The PostgreSQL event store: one round trip per append, a transaction-id-ordered feed.

Appends call the ``sagaflow_append`` function (see the migration), which checks
idempotency and the expected version and inserts in one statement, so each append
is a single-statement transaction. The feed reads rows whose writing transaction
is below the oldest still-running one that may append (the horizon, see
``_HORIZON``), ordered by ``(epoch, tx_id, global_position)``: an event whose
transaction commits late is read when it commits, never skipped, and writers never
wait for each other except on the same stream. Transactions that never append (a
projection's batch) declare it first (:func:`declare_no_append`) and do not hold the
feed back.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb, set_json_dumps
from psycopg_pool import AsyncConnectionPool

from eventstore.base import EventStore, FeedStatus, Snapshot
from eventstore.envelope import (
    ANY_VERSION,
    START,
    AppendResult,
    ConcurrencyError,
    DuplicateEventConflict,
    EncodedEvent,
    FeedCursor,
    NewEvent,
    RecordedEvent,
    check_same_fact,
    check_stream_id,
)
from eventstore.migrate import psycopg_url, upgrade
from eventstore.upcasting import Upcasters

_COLUMNS = (
    "event_id, event_type, schema_version, stream_id, stream_type, version, "
    "global_position, recorded_at, data, metadata, epoch, tx_id::text::bigint"
)
_APPEND = "SELECT * FROM sagaflow_append(%s, %s, %s, %s, %s::jsonb)"
_READ_STREAM = (
    f"SELECT {_COLUMNS} FROM events WHERE stream_id = %s AND version >= %s ORDER BY version"
)
#: Payload fields with an expression index for keyed reads (migration 0011).
KEYED_FIELDS = frozenset({"reservation_id", "return_id"})
# Why the field is spelled into the SQL, not a parameter: an expression index is used
# only when the query has the very expression it indexes.
_READ_STREAM_KEYED = {
    field: f"SELECT {_COLUMNS} FROM events WHERE stream_id = %s "
    f"AND data ->> '{field}' = %s AND version <= %s ORDER BY version"
    for field in KEYED_FIELDS
}
#: The advisory lock that marks a transaction which never appends (migration 0009).
NO_APPEND_LOCK = (1396787009, 1)
_MARKED = f"""
SELECT l.pid FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.classid = {NO_APPEND_LOCK[0]}
  AND l.objid = {NO_APPEND_LOCK[1]} AND l.objsubid = 2 AND l.granted
"""
# The horizon: the oldest transaction running in this statement's snapshot that is
# not marked as never appending, or the snapshot's xmax when there is none. Every
# transaction below it has finished (its rows, if committed, are visible to this very
# snapshot) or is marked and has no rows. Why this is safe although pg_locks and
# pg_stat_activity are read after the snapshot was taken: a marked transaction that
# ends in between is simply not excluded (a horizon too low, never too high); a
# transaction marks itself before its first write and cannot append once marked
# (sagaflow_append refuses), and backend_xid is its top-level xid, the one its rows
# would carry. The comparison is on the low 32 bits: backend_xid is an ``xid``
# (``%%``: the text is a parametrised query).
_HORIZON = f"""(
    SELECT coalesce(min(x), pg_snapshot_xmax(pg_current_snapshot()))
    FROM pg_snapshot_xip(pg_current_snapshot()) AS x
    WHERE x::text::bigint %% 4294967296 NOT IN (
        SELECT a.backend_xid::text::bigint FROM pg_stat_activity a
        WHERE a.backend_xid IS NOT NULL AND a.pid IN ({_MARKED})
    )
)"""
# Why both conditions: rows of earlier epochs are all committed; in the current
# epoch only transactions below the horizon are certainly finished.
_READ_FEED = f"""
SELECT {_COLUMNS} FROM events
WHERE (epoch, tx_id, global_position) > (%s, %s::text::xid8, %s)
  AND (epoch < %s OR tx_id < {_HORIZON})
ORDER BY epoch, tx_id, global_position
LIMIT %s
"""

# The envelope of RecordedEvent.envelope(), rendered by PostgreSQL for the relay. Why
# in SQL: parsing ``data`` into Python objects only to serialise them again was most
# of the relay's CPU. json_build_object (not jsonb) keeps the envelope's key order;
# ``recorded_at`` is rendered once, in UTC with microseconds, for body and headers.
_READ_FEED_ENCODED = f"""
SELECT e.epoch, e.tx_id::text::bigint, e.global_position, e.event_id::text, e.event_type,
       e.schema_version, e.stream_id, e.stream_type, e.version, t.at, e.metadata,
       json_build_object(
           'event_id', e.event_id, 'event_type', e.event_type,
           'schema_version', e.schema_version, 'stream_id', e.stream_id,
           'stream_type', e.stream_type, 'version', e.version,
           'global_position', e.global_position, 'recorded_at', t.at, 'data', e.data,
           'metadata', e.metadata,
           'cursor', e.epoch || '.' || e.tx_id::text || '.' || e.global_position
       )::text
FROM events e,
     LATERAL (SELECT to_char(e.recorded_at AT TIME ZONE 'UTC',
                             'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') AS at) t
WHERE (e.epoch, e.tx_id, e.global_position) > (%s, %s::text::xid8, %s)
  AND (e.epoch < %s OR e.tx_id < {_HORIZON})
ORDER BY e.epoch, e.tx_id, e.global_position
LIMIT %s
"""


async def declare_no_append(conn: psycopg.AsyncConnection[Any]) -> None:
    """Mark the open transaction on ``conn`` as never appending events.

    Call it as the transaction's first statement (it refuses after a write). The
    feed's horizon then ignores the transaction, so a long read-model batch no longer
    holds back the events appended meanwhile; an append in it is refused.
    """
    await conn.execute("SELECT sagaflow_declare_no_append()")


def _encoded(row: tuple[Any, ...]) -> EncodedEvent:
    return EncodedEvent(
        cursor=FeedCursor(row[0], row[1], row[2]),
        event_id=row[3],
        event_type=row[4],
        schema_version=row[5],
        stream_id=row[6],
        stream_type=row[7],
        version=row[8],
        recorded_at=row[9],
        metadata=row[10],
        body=row[11].encode(),
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


set_json_dumps(_dumps)


def _recorded(row: tuple[Any, ...]) -> RecordedEvent:
    return RecordedEvent(
        event_id=row[0],
        event_type=row[1],
        schema_version=row[2],
        stream_id=row[3],
        stream_type=row[4],
        version=row[5],
        global_position=row[6],
        recorded_at=row[7],
        data=row[8],
        metadata=row[9],
        cursor=FeedCursor(row[10], row[11], row[6]),
    )


class PostgresEventStore(EventStore):
    """The production store over a psycopg connection pool."""

    def __init__(self, pool: AsyncConnectionPool, upcasters: Upcasters | None = None) -> None:
        super().__init__(upcasters)
        self.pool = pool
        self.epoch = 1

    @classmethod
    async def connect(
        cls,
        database_url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        migrate: bool = True,
        statement_timeout_ms: int = 30_000,
        upcasters: Upcasters | None = None,
    ) -> PostgresEventStore:
        """Migrate (unless told not to), open a pool and settle the current epoch."""
        url = psycopg_url(database_url)
        if migrate:
            upgrade(url)
        pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # Why: every statement is its own transaction, so no connection ever
            # holds the feed's horizon back; the timeouts bound the rest.
            kwargs={
                "autocommit": True,
                "options": f"-c statement_timeout={statement_timeout_ms} "
                "-c idle_in_transaction_session_timeout=60000",
            },
        )
        await pool.open(wait=True, timeout=30)
        store = cls(pool, upcasters)
        await store._settle_epoch()
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def _settle_epoch(self) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("LOCK TABLE store_epochs IN EXCLUSIVE MODE")
            row = await (
                await conn.execute("SELECT max(epoch), max(first_position) FROM store_epochs")
            ).fetchone()
            assert row is not None
            epoch = int(row[0])
            went_back = await (
                await conn.execute(
                    "SELECT pg_current_xact_id() < max(tx_id) FROM events WHERE epoch = %s",
                    (epoch,),
                )
            ).fetchone()
            if went_back and went_back[0]:
                # Transaction ids restarted (restored into a new cluster): start an epoch
                # so new events sort after every restored one in the feed.
                epoch += 1
                await conn.execute(
                    "INSERT INTO store_epochs (epoch, first_position) "
                    "SELECT %s, coalesce(max(global_position), 0) FROM events",
                    (epoch,),
                )
            self.epoch = epoch

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        stream_type: str,
    ) -> AppendResult:
        check_stream_id(stream_id)
        if not events:
            raise ValueError("append needs at least one event")
        batch = _dumps(
            [
                {
                    "event_id": str(e.event_id),
                    "event_type": e.event_type,
                    "schema_version": e.schema_version,
                    "data": e.data(),
                    "metadata": dict(e.metadata),
                }
                for e in events
            ]
        )
        params = (stream_id, stream_type, expected_version, self.epoch, batch)
        while True:
            async with self.pool.connection() as conn:
                try:
                    cur = await conn.execute(_APPEND, params)
                    rows = await cur.fetchall()
                    if not rows:
                        # The stream is elsewhere: a conflict, or our own earlier append.
                        outcome = await self._classify(conn, stream_id, events)
                    else:
                        rows.sort()
                        return AppendResult(
                            stream_id, rows[0][0], rows[-1][0], tuple(r[1] for r in rows)
                        )
                except psycopg.errors.UniqueViolation as exc:
                    outcome = await self._classify(conn, stream_id, events, exc)
            if isinstance(outcome, AppendResult):
                return outcome
            if expected_version == ANY_VERSION:
                # Why retry: "any version" lost a race for the next version number,
                # not a business decision; the next try reads the winner's version.
                continue
            raise ConcurrencyError(stream_id, expected_version, outcome)

    async def _classify(
        self,
        conn: psycopg.AsyncConnection[Any],
        stream_id: str,
        events: Sequence[NewEvent],
        exc: psycopg.errors.UniqueViolation | None = None,
    ) -> AppendResult | int:
        """After an append wrote nothing: the duplicate's result, or the actual version."""
        # A retried append whose events are all stored is a success (idempotency).
        duplicate = await self._already_stored(conn, stream_id, events)
        if duplicate is not None:
            return duplicate
        if exc is not None and exc.diag.constraint_name == "events_event_id_key":
            raise DuplicateEventConflict(
                f"stream {stream_id!r}: some of the {len(events)} event ids are already stored"
            ) from None
        return await self._version(conn, stream_id)

    async def _already_stored(
        self, conn: psycopg.AsyncConnection[Any], stream_id: str, events: Sequence[NewEvent]
    ) -> AppendResult | None:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE event_id = ANY(%s) ORDER BY version",
            ([e.event_id for e in events],),
        )
        rows = [_recorded(row) for row in await cur.fetchall()]
        if len(rows) != len(events):
            return None
        by_id = {r.event_id: r for r in rows}
        for new in events:
            check_same_fact(new, stream_id, by_id[new.event_id])
        positions = tuple(r.global_position for r in rows)
        return AppendResult(stream_id, rows[0].version, rows[-1].version, positions, True)

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        check_stream_id(stream_id)
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(_READ_STREAM, (stream_id, from_version))
            return [_recorded(row) for row in await cur.fetchall()]

    async def read_stream_keyed(
        self, stream_id: str, field: str, value: str, *, to_version: int | None = None
    ) -> list[RecordedEvent]:
        check_stream_id(stream_id)
        sql = _READ_STREAM_KEYED.get(field)
        if sql is None:
            raise ValueError(
                f"no keyed reads by {field!r}: the store indexes {sorted(KEYED_FIELDS)} "
                "(add an expression index in a migration for another field)"
            )
        last = to_version if to_version is not None else 2**31 - 1
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(sql, (stream_id, value, last))
            return [_recorded(row) for row in await cur.fetchall()]

    async def stream_version(self, stream_id: str) -> int:
        check_stream_id(stream_id)
        async with self.pool.connection() as conn:
            return await self._version(conn, stream_id)

    async def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        for stream_id in stream_ids:
            check_stream_id(stream_id)
        if not stream_ids:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT stream_id, max(version) FROM events WHERE stream_id = ANY(%s) "
                "GROUP BY stream_id",
                (list(set(stream_ids)),),
            )
            return {str(row[0]): int(row[1]) for row in await cur.fetchall()}

    @staticmethod
    async def _version(conn: psycopg.AsyncConnection[Any], stream_id: str) -> int:
        cur = await conn.execute(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = %s", (stream_id,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def read_feed(self, after: FeedCursor = START, limit: int = 500) -> list[RecordedEvent]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _READ_FEED, (after.epoch, after.tx_id, after.position, self.epoch, limit)
            )
            return [_recorded(row) for row in await cur.fetchall()]

    async def read_feed_encoded(
        self, after: FeedCursor = START, limit: int = 500
    ) -> list[EncodedEvent]:
        """``read_feed`` with each envelope rendered as JSON by PostgreSQL (the relay's read).

        Same rows, order and horizon as ``read_feed``.
        """
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _READ_FEED_ENCODED, (after.epoch, after.tx_id, after.position, self.epoch, limit)
            )
            return [_encoded(row) for row in await cur.fetchall()]

    async def feed_status(self) -> FeedStatus:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"""
                SELECT (SELECT coalesce(max(global_position), 0) FROM events),
                       coalesce(extract(epoch FROM now() - min(xact_start)), 0)
                FROM pg_stat_activity
                WHERE backend_xid IS NOT NULL AND datname = current_database()
                  AND pid <> pg_backend_pid() AND pid NOT IN ({_MARKED})
                """
            )
            row = await cur.fetchone()
            assert row is not None
            return FeedStatus(head_position=int(row[0]), horizon_held_s=float(row[1]))

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO snapshots (stream_id, stream_type, version, schema, state)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (stream_id) DO UPDATE
                SET version = EXCLUDED.version, schema = EXCLUDED.schema,
                    state = EXCLUDED.state, recorded_at = now()
                WHERE snapshots.version < EXCLUDED.version OR snapshots.schema <> EXCLUDED.schema
                """,
                (
                    snapshot.stream_id,
                    snapshot.stream_type,
                    snapshot.version,
                    snapshot.schema,
                    Jsonb(snapshot.state),
                ),
            )

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT stream_id, stream_type, version, schema, state FROM snapshots "
                "WHERE stream_id = %s",
                (stream_id,),
            )
            row = await cur.fetchone()
            return Snapshot(*row) if row else None
