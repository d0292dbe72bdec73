"""Racing writers against the PostgreSQL store: one winner per version, a gap-free feed."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import defaultdict

import psycopg
import pytest

from domain.events import OrderCreated
from eventstore import START, ConcurrencyError, FeedCursor, NewEvent
from eventstore.postgres import PostgresEventStore, declare_no_append

pytestmark = pytest.mark.integration


def two_events() -> list[NewEvent]:
    return [
        NewEvent(OrderCreated(order_id=uuid.uuid4().hex, customer_id="c")),
        NewEvent(OrderCreated(order_id=uuid.uuid4().hex, customer_id="c")),
    ]


async def test_64_appends_at_one_expected_version_have_exactly_one_winner(
    database_url: str,
) -> None:
    store = await PostgresEventStore.connect(database_url, migrate=False, max_size=64)
    try:
        stream = "race-1"
        rounds = 5
        for round_no in range(rounds):
            expected = 2 * round_no
            batches = [two_events() for _ in range(64)]
            results = await asyncio.gather(
                *(store.append(stream, b, expected, stream_type="Race") for b in batches),
                return_exceptions=True,
            )
            winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
            losers = [r for r in results if isinstance(r, BaseException)]
            assert len(winners) == 1, f"round {round_no}: {len(winners)} winners"
            assert all(isinstance(r, ConcurrencyError) for r in losers), losers[:1]
            stored = await store.read_stream(stream, expected + 1)
            # The winner's two events, whole; nothing of any loser.
            assert [e.event_id for e in stored] == [e.event_id for e in batches[winners[0]]]
        async with store.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT count(*), count(DISTINCT (stream_id, version)), max(version) "
                    "FROM events WHERE stream_id = %s",
                    (stream,),
                )
            ).fetchone()
        assert rows == (2 * rounds, 2 * rounds, 2 * rounds)
    finally:
        await store.close()


APPEND_SQL = "SELECT * FROM sagaflow_append(%s, 'Gap', -1, %s, %s::jsonb)"


async def _writer(
    url: str,
    epoch: int,
    writer_no: int,
    deadline: float,
    committed: set[str],
    rolled_back: set[str],
) -> None:
    rng = random.Random(writer_no)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            stream = f"gap-{rng.randrange(16)}"
            ids = [uuid.uuid4() for _ in range(rng.randint(1, 3))]
            batch = [
                {"event_id": str(i), "event_type": "GapWritten", "schema_version": 1,
                 "data": {"writer": writer_no, "n": n}, "metadata": {}}
                for i in ids
            ]  # fmt: skip
            roll = rng.random()
            await conn.execute("BEGIN")
            try:
                await conn.execute(APPEND_SQL, (stream, epoch, json.dumps(batch)))
            except psycopg.errors.UniqueViolation:
                # Lost the race for the stream's next version to a held transaction.
                await conn.execute("ROLLBACK")
                rolled_back.update(map(str, ids))
                continue
            if roll < 0.1:
                await conn.execute("ROLLBACK")
                rolled_back.update(map(str, ids))
                continue
            # Writer 0 holds every third transaction open past a second, the others
            # now and then: later positions commit first meanwhile.
            if (writer_no == 0 and n % 3 == 0) or roll > 0.97:
                await asyncio.sleep(1.2)
            await conn.execute("COMMIT")
            committed.update(map(str, ids))


async def _read_model_writer(url: str, writer_no: int, deadline: float) -> int:
    """A projection-like writer: declares it never appends, writes rows, holds open.

    Its transactions must not hold back the feed, and excluding them from the horizon
    must not make the feed skip any appender's event."""
    rng = random.Random(1000 + writer_no)
    held = 0
    async with await psycopg.AsyncConnection.connect(url) as conn:
        while time.monotonic() < deadline:
            async with conn.transaction():
                await declare_no_append(conn)
                await conn.execute("INSERT INTO read_model_scratch VALUES (%s)", (writer_no,))
                await asyncio.sleep(rng.uniform(0.0, 0.8))
                held += 1
    return held


async def _tail_feed(store: PostgresEventStore, stop: asyncio.Event, seen: list) -> None:
    cursor = START
    while not stop.is_set():
        batch = await store.read_feed(cursor, 200)
        if batch:
            cursor = batch[-1].cursor
            seen.extend(batch)
        else:
            await asyncio.sleep(0.005)


async def _tail_naively(url: str, stop: asyncio.Event, seen: list[str]) -> None:
    """The control: remembers the highest position seen, as a bigserial reader would."""
    last = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            rows = await (
                await conn.execute(
                    "SELECT global_position, event_id::text FROM events "
                    "WHERE global_position > %s ORDER BY global_position LIMIT 200",
                    (last,),
                )
            ).fetchall()
            if rows:
                last = rows[-1][0]
                seen.extend(r[1] for r in rows)
            else:
                await asyncio.sleep(0.005)


async def test_the_feed_sees_every_committed_event_once_while_a_naive_reader_misses_some(
    database_url: str,
) -> None:
    store = await PostgresEventStore.connect(database_url, migrate=False)
    committed: set[str] = set()
    rolled_back: set[str] = set()
    seen: list = []
    naive: list[str] = []
    stop = asyncio.Event()
    try:
        readers = [
            asyncio.create_task(_tail_feed(store, stop, seen)),
            asyncio.create_task(_tail_naively(database_url, stop, naive)),
        ]
        async with store.pool.connection() as conn:
            await conn.execute("CREATE TABLE read_model_scratch (writer integer)")
        deadline = time.monotonic() + 5.0
        *_, marked_a, marked_b = await asyncio.gather(
            *(
                _writer(database_url, store.epoch, w, deadline, committed, rolled_back)
                for w in range(8)
            ),
            _read_model_writer(database_url, 0, deadline),
            _read_model_writer(database_url, 1, deadline),
        )
        assert marked_a and marked_b, "the read-model writers never ran"
        # Let the feed reader catch up with the last commits, bounded.
        catch_up = time.monotonic() + 15
        while len(seen) < len(committed) and time.monotonic() < catch_up:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # and give it the chance to see a duplicate
        stop.set()
        await asyncio.gather(*readers)
    finally:
        await store.close()

    seen_ids = [str(e.event_id) for e in seen]
    assert len(committed) > 200, "the scenario wrote too little to mean anything"
    assert len(seen_ids) == len(set(seen_ids)), "an event was delivered twice"
    assert set(seen_ids) == committed, (
        f"missing {len(committed - set(seen_ids))}, extra {len(set(seen_ids) - committed)}"
    )
    assert not set(seen_ids) & rolled_back
    versions: dict[str, list[int]] = defaultdict(list)
    for event in seen:
        versions[event.stream_id].append(event.version)
    for stream, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), f"{stream} out of order or with a gap"
    cursors = [e.cursor for e in seen]
    assert cursors == sorted(cursors) and all(isinstance(c, FeedCursor) for c in cursors)
    # The control proves this scenario can make a reader lose events.
    assert committed - set(naive), "the naive reader missed nothing: the test proves nothing"
