"""Smoke: the PostgreSQL store appends, reads and feeds."""

from __future__ import annotations

from domain.events import OrderCreated
from eventstore import NO_STREAM, NewEvent, START
from eventstore.postgres import PostgresEventStore


async def test_append_and_read_back(pg_store: PostgresEventStore) -> None:
    result = await pg_store.append(
        "order-1",
        [NewEvent(OrderCreated(order_id="1", customer_id="c"))],
        NO_STREAM,
        stream_type="Order",
    )
    assert result.first_version == 1
    events = await pg_store.read_stream("order-1")
    assert [e.version for e in events] == [1]
    feed = await pg_store.read_feed(START)
    assert [e.event_id for e in feed] == [events[0].event_id]
    assert isinstance(pg_store.decode(feed[0]), OrderCreated)
