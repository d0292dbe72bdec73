"""The feed's horizon is held by transactions that may append, not by read-model ones.

A transaction that declared it never appends (``declare_no_append``: a projection
batch, a rebuild) may stay open with rows written; the feed still reads the events
appended meanwhile. One that did not declare it holds the feed as before. The race
test in ``test_eventstore_concurrency.py`` runs marked writers beside the appenders.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import psycopg
import pytest

from domain.events import OrderCreated
from eventstore import START, FeedCursor, NewEvent
from eventstore.postgres import PostgresEventStore, declare_no_append

pytestmark = pytest.mark.integration


async def _scratch(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS horizon_scratch (n bigint)")


async def _append_one(store: PostgresEventStore) -> str:
    event = NewEvent(OrderCreated(order_id=uuid.uuid4().hex, customer_id="c"))
    await store.append(f"horizon-{uuid.uuid4().hex[:8]}", [event], 0, stream_type="Order")
    return str(event.event_id)


async def _seen_within(store: PostgresEventStore, event_id: str, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    cursor: FeedCursor = START
    while True:
        for event in await store.read_feed(cursor, 1000):
            cursor = event.cursor
            if str(event.event_id) == event_id:
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def test_an_open_read_model_transaction_does_not_hold_back_the_feed(
    database_url: str, pg_store: PostgresEventStore
) -> None:
    await _scratch(database_url)
    marked = await psycopg.AsyncConnection.connect(database_url)
    async with marked, marked.transaction():
        await declare_no_append(marked)
        await marked.execute("INSERT INTO horizon_scratch VALUES (1)")
        xid = await (await marked.execute("SELECT pg_current_xact_id_if_assigned()")).fetchone()
        assert xid is not None and xid[0] is not None, "the marked transaction has no xid"
        event_id = await _append_one(pg_store)
        assert await _seen_within(pg_store, event_id, 5.0)
        await asyncio.sleep(0.6)
        # Not reported as holding the feed either.
        assert (await pg_store.feed_status()).horizon_held_s < 0.3


async def test_an_open_write_transaction_that_did_not_declare_still_holds_the_feed(
    database_url: str, pg_store: PostgresEventStore
) -> None:
    await _scratch(database_url)
    unmarked = await psycopg.AsyncConnection.connect(database_url)
    async with unmarked, unmarked.transaction():
        await unmarked.execute("INSERT INTO horizon_scratch VALUES (1)")
        event_id = await _append_one(pg_store)
        # Held: the open transaction might still append below this event.
        assert not await _seen_within(pg_store, event_id, 0.5)
        assert (await pg_store.feed_status()).horizon_held_s > 0.3
    assert await _seen_within(pg_store, event_id, 5.0)


async def test_declaring_after_a_write_or_appending_after_declaring_is_refused(
    database_url: str,
) -> None:
    await _scratch(database_url)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="already written"):
            async with conn.transaction():
                await conn.execute("INSERT INTO horizon_scratch VALUES (1)")
                await declare_no_append(conn)
        batch = json.dumps(
            [{"event_id": str(uuid.uuid4()), "event_type": "X", "schema_version": 1,
              "data": {}, "metadata": {}}]
        )  # fmt: skip
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="never appends"):
            async with conn.transaction():
                await declare_no_append(conn)
                await conn.execute(
                    "SELECT * FROM sagaflow_append('refused-1', 'X', -1, 1, %s::jsonb)", (batch,)
                )
        # The mark ends with its transaction: the same connection appends again.
        async with conn.transaction():
            rows = await (
                await conn.execute(
                    "SELECT * FROM sagaflow_append('refused-1', 'X', -1, 1, %s::jsonb)", (batch,)
                )
            ).fetchall()
        assert len(rows) == 1
        count = await (await conn.execute("SELECT count(*) FROM horizon_scratch")).fetchone()
        assert count == (0,), "the refused transactions wrote nothing"
