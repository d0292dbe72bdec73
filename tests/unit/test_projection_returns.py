"""Pure read-model rules of returns: return_summary and daily_returns."""

from __future__ import annotations

import pytest

from domain import events as ev
from eventstore import ANY_VERSION, InMemoryEventStore, NewEvent
from projections import models as m


async def _record(store: InMemoryEventStore, stream: str, stream_type: str, *events):
    await store.append(stream, [NewEvent(e) for e in events], ANY_VERSION, stream_type=stream_type)
    recorded = await store.read_stream(stream)
    return [(r, store.decode(r)) for r in recorded[-len(events) :]]


def _opened(return_id: str = "r1") -> ev.ReturnOpened:
    return ev.ReturnOpened(
        return_id=return_id,
        order_id="o1",
        customer_id="c1",
        reason="too big",
        lines=[ev.ReturnLine(sku="a", quantity=2, unit_price_cents=150)],
        total_cents=300,
    )


async def test_return_summary_follows_a_return_to_completion():
    store = InMemoryEventStore()
    pairs = await _record(
        store,
        "return-r1",
        "Return",
        _opened(),
        ev.ReturnReceived(),
        ev.ReturnRefunded(payment_id="p1", amount_cents=300),
        ev.ReturnCompleted(),
    )
    row = None
    for recorded, event in pairs:
        row = m.evolve_return(row, recorded, event)
    assert row is not None
    assert (row["status"], row["refunded_cents"], row["version"]) == ("completed", 300, 4)
    assert set(row["timeline"]) == {"opened_at", "received_at", "refunded_at", "completed_at"}


async def test_an_expired_return_keeps_its_reason():
    store = InMemoryEventStore()
    pairs = await _record(store, "return-r1", "Return", _opened(), ev.ReturnExpired(reason="late"))
    row = m.evolve_return(None, *pairs[0])
    row = m.evolve_return(row, *pairs[1])
    assert (row["status"], row["close_reason"]) == ("expired", "late")


async def test_an_event_for_an_unknown_return_is_a_projection_error():
    store = InMemoryEventStore()
    [(recorded, event)] = await _record(store, "return-r9", "Return", ev.ReturnReceived())
    with pytest.raises(m.ProjectionError, match="unknown return 'r9'"):
        m.evolve_return(None, recorded, event)


async def test_daily_returns_count_opened_units_and_refunded_cents():
    store = InMemoryEventStore()
    pairs = await _record(
        store,
        "return-r1",
        "Return",
        _opened(),
        ev.ReturnReceived(),
        ev.ReturnRefunded(payment_id="p1", amount_cents=300),
    )
    pairs += await _record(
        store, "return-r2", "Return", _opened("r2"), ev.ReturnExpired(reason="late")
    )
    days: dict = {}
    for recorded, event in pairs:
        m.returns_delta(days, recorded, event)
    [day] = days.values()
    assert (day.opened, day.units, day.expired, day.refunded, day.refunded_cents) == (
        2,
        4,
        1,
        1,
        300,
    )


async def test_restocked_returns_count_as_available_stock():
    store = InMemoryEventStore()
    pairs = await _record(
        store,
        "inventory-a",
        "Inventory",
        ev.StockReturned(return_id="r1", order_id="o1", quantity=2),
        ev.StockReturnReversed(return_id="r1", order_id="o1", quantity=1),
    )
    delta = m.StockDelta()
    for recorded, event in pairs:
        m.stock_delta(delta, recorded, event)
    assert delta.available == 1
