"""A statement that fails at the server inside a pipelined batch is blamed on its read
model and its message alone, and the rest of the batch commits."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import pytest

from domain import events as ev
from eventstore.envelope import NO_STREAM, NewEvent
from eventstore.postgres import PostgresEventStore
from projections.deadletters import list_dead_letters
from projections.engine import Message, Position, Projector
from projections.handlers import Conn, OrderSummaryProjection, Pair, Projection
from streaming.transport import no_checkpoint

pytestmark = pytest.mark.integration


class DivideByZeroFor(Projection):
    """Queues, for one order, a statement the server refuses (the reply comes later)."""

    name = "divide_probe"
    tables = ()
    stream_types = frozenset({"Order"})

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id

    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        """Nothing, except for the chosen stream."""
        if any(r.stream_id == self.stream_id for r, _ in pairs):
            await conn.execute("SELECT 1 / 0")  # no fetch: in a pipeline, fails later


@pytest.mark.parametrize("probe_first", [True, False], ids=["before-another", "last"])
async def test_a_failing_statement_is_dead_lettered_alone_under_its_read_models_name(
    pg_store: PostgresEventStore, probe_first: bool
) -> None:
    tag = uuid.uuid4().hex[:8]
    orders = [f"blame-{tag}-{i}" for i in range(8)]
    for order in orders:
        await pg_store.append(
            ev.order_stream(order),
            [NewEvent(ev.OrderCreated(order_id=order, customer_id="c"))],
            NO_STREAM,
            stream_type="Order",
        )
    feed = [e for e in await pg_store.read_feed(limit=100_000) if tag in e.stream_id]
    poison = ev.order_stream(orders[5])
    # last: nothing fetches after it, so in the batch the error surfaces at the commit
    chosen: list[Projection] = [DivideByZeroFor(poison), OrderSummaryProjection()]
    projector = Projector(
        pg_store.pool,
        chosen if probe_first else chosen[::-1],
        pg_store.upcasters,
        consumer=f"blame-{tag}",
        retry_attempts=2,
        backoff_initial_s=0.01,
    )
    messages = [
        Message(Position("$feed", 0, e.global_position), e.stream_id, recorded=e) for e in feed
    ]
    await projector.process(messages, no_checkpoint)

    (letter,) = await list_dead_letters(pg_store.pool, consumer=f"blame-{tag}")
    assert (letter.stream_id, letter.handler) == (poison, "divide_probe")
    assert "division by zero" in letter.error
    async with pg_store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT order_id FROM order_summary WHERE order_id = ANY(%s)", (orders,)
        )
        applied = {row[0] for row in await cur.fetchall()}
    assert applied == set(orders) - {orders[5]}
