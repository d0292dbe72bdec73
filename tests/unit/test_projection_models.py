"""Pure read-model rules, fed with events recorded by the in-memory store."""

from __future__ import annotations

import json
from datetime import date

import pytest

from bench.workload import register_products, run_orders
from domain import events as ev
from domain import saga_events as sev
from eventstore import ANY_VERSION, InMemoryEventStore, NewEvent, RecordedEvent
from projections import models as m
from projections.engine import BadMessage, Message, Position, decode_message


async def _record(store: InMemoryEventStore, stream: str, stream_type: str, *events):
    await store.append(stream, [NewEvent(e) for e in events], ANY_VERSION, stream_type=stream_type)
    recorded = await store.read_stream(stream)
    return [(r, store.decode(r)) for r in recorded[-len(events) :]]


def _fold_order(pairs, evolve=m.evolve_order):
    row = None
    for recorded, event in pairs:
        row = evolve(row, recorded, event)
    return row


async def test_order_summary_follows_an_order_from_draft_to_delivery():
    store = InMemoryEventStore()
    pairs = await _record(
        store,
        "order-o1",
        "Order",
        ev.OrderCreated(order_id="o1", customer_id="c1"),
        ev.OrderItemAdded(sku="a", name="A", quantity=2, unit_price_cents=150),
        ev.OrderItemAdded(sku="b", name="B", quantity=1, unit_price_cents=99),
        ev.OrderItemAdded(sku="a", name="A", quantity=1, unit_price_cents=150),
        ev.OrderItemRemoved(sku="b"),
        ev.OrderSubmitted(total_cents=450),
        ev.PaymentReceived(payment_id="p1", amount_cents=450),
        ev.OrderShipped(tracking_number="T1", carrier="ups"),
        ev.OrderDelivered(),
    )
    row = _fold_order(pairs)
    assert row["status"] == "delivered"
    assert row["lines"] == [{"sku": "a", "name": "A", "quantity": 3, "unit_price_cents": 150}]
    assert (row["total_cents"], row["paid_cents"]) == (450, 450)
    assert (row["tracking_number"], row["carrier"]) == ("T1", "ups")
    assert set(row["timeline"]) == {
        "created_at",
        "submitted_at",
        "paid_at",
        "shipped_at",
        "delivered_at",
    }
    assert row["version"] == 9


async def test_order_event_before_creation_raises_instead_of_being_dropped():
    store = InMemoryEventStore()
    pairs = await _record(store, "order-o2", "Order", ev.OrderSubmitted(total_cents=1))
    with pytest.raises(m.ProjectionError, match="unknown order 'o2'"):
        _fold_order(pairs)


async def test_customer_order_takes_the_submitted_total_and_the_cancelled_status():
    store = InMemoryEventStore()
    pairs = await _record(
        store,
        "order-o3",
        "Order",
        ev.OrderCreated(order_id="o3", customer_id="c9"),
        ev.OrderSubmitted(total_cents=700),
        ev.OrderCancelled(reason="changed mind"),
    )
    row = _fold_order(pairs, m.evolve_customer_order)
    assert (row["customer_id"], row["status"], row["total_cents"]) == ("c9", "cancelled", 700)


async def test_stock_moves_between_available_reserved_and_sold():
    store = InMemoryEventStore()
    pairs = await _record(
        store,
        "inventory-x",
        "Inventory",
        ev.ProductRegistered(sku="x", name="X", unit_price_cents=10),
        ev.StockAdded(quantity=10),
        ev.StockReserved(reservation_id="r1", order_id="o", quantity=4),
        ev.StockReserved(reservation_id="r2", order_id="p", quantity=3),
        ev.StockReservationReleased(reservation_id="r2", order_id="p", quantity=3),
        ev.StockSold(reservation_id="r1", order_id="o", quantity=4),
        ev.ProductPriceChanged(unit_price_cents=12),
    )
    delta = m.StockDelta()
    for recorded, event in pairs:
        m.stock_delta(delta, recorded, event)
    assert (delta.available, delta.reserved, delta.sold) == (6, 0, 4)
    assert (delta.name, delta.unit_price_cents) == ("X", 12)
    assert m.sku_of(pairs[0][0]) == "x"


async def test_daily_sales_count_orders_revenue_cancellations_and_refunds_once_each():
    store = InMemoryEventStore()
    pairs = [
        *await _record(
            store,
            "order-o4",
            "Order",
            ev.OrderCreated(order_id="o4", customer_id="c"),
            ev.OrderSubmitted(total_cents=500),
            ev.PaymentReceived(payment_id="p", amount_cents=500),
            ev.OrderCancelled(reason="r"),
        ),
        *await _record(
            store,
            "payment-o4",
            "Payment",
            ev.PaymentCharged(payment_id="p", order_id="o4", amount_cents=500),
            ev.PaymentRefunded(payment_id="p", amount_cents=500, reason="r"),
        ),
    ]
    days: dict[date, m.DaySales] = {}
    for recorded, event in pairs:
        m.sales_delta(days, recorded, event)
    (sales,) = days.values()
    assert sales == m.DaySales(
        orders=1, revenue_cents=500, cancellations=1, refunds=1, refunded_cents=500
    )


async def test_product_sales_count_submitted_lines_and_take_back_cancelled_ones():
    store = InMemoryEventStore()
    kept = await _record(
        store,
        "order-k",
        "Order",
        ev.OrderCreated(order_id="k", customer_id="c"),
        ev.OrderItemAdded(sku="a", name="A", quantity=2, unit_price_cents=100),
        ev.OrderSubmitted(total_cents=200),
    )
    cancelled = await _record(
        store,
        "order-z",
        "Order",
        ev.OrderCreated(order_id="z", customer_id="c"),
        ev.OrderItemAdded(sku="a", name="A", quantity=5, unit_price_cents=100),
        ev.OrderSubmitted(total_cents=500),
        ev.OrderCancelled(reason="r"),
    )
    _, products = m.recompute_analytics([*kept, *cancelled])
    assert (products["a"].units, products["a"].revenue_cents) == (2, 200)


async def test_saga_outcome_is_parked_until_the_compensation_is_resolved():
    store = InMemoryEventStore()
    pairs = await _record(
        store,
        "saga-s1",
        "Saga",
        sev.SagaStarted(saga_id="s1", saga_type="order", order_id="s1"),
        sev.CompensationParked(saga_id="s1", step="refund", error="boom"),
    )
    row = _fold_order(pairs, m.evolve_saga)
    assert (row["status"], row["parked_steps"]) == ("compensation_parked", ["refund"])
    more = await _record(
        store,
        "saga-s1",
        "Saga",
        sev.CompensationResolved(saga_id="s1", step="refund", resolution="manual"),
        sev.SagaCompensated(saga_id="s1", reason="payment", compensated_steps=["refund"]),
    )
    for recorded, event in more:
        row = m.evolve_saga(row, recorded, event)
    assert (row["status"], row["parked_steps"]) == ("compensated", [])


async def test_recomputed_analytics_of_a_workload_balance_orders_and_refunds():
    store = InMemoryEventStore()
    await register_products(store, ["a", "b", "c"])
    await run_orders(store, 60, prefix="w", skus=["a", "b", "c"], concurrency=4)
    pairs = [(r, store.decode(r)) for r in await store.read_feed(limit=100_000)]
    days, products = m.recompute_analytics(pairs)
    (sales,) = days.values()
    assert sales.orders == 60
    assert 0 < sales.cancellations < 60
    assert sales.refunds == sales.cancellations
    assert sum(p.revenue_cents for p in products.values()) == (
        sales.revenue_cents - sales.refunded_cents
    )


def _message(payload: bytes) -> Message:
    return Message(Position("t", 0, 0), "order-x", payload=payload)


def test_a_message_that_is_not_an_envelope_is_a_bad_message_naming_the_reason():
    store = InMemoryEventStore()
    with pytest.raises(BadMessage, match="not a valid event envelope") as err:
        decode_message(_message(b"\x00garbage"), store.upcasters)
    assert err.value.handler == "envelope"


async def test_unknown_types_and_missing_upcasters_are_bad_messages_naming_the_stream():
    store = InMemoryEventStore()
    (pair,) = await _record(
        store, "order-u", "Order", ev.OrderCreated(order_id="u", customer_id="c")
    )
    envelope = pair[0].envelope()
    unknown = json.dumps({**envelope, "event_type": "OrderTeleported"}).encode()
    with pytest.raises(BadMessage, match="unknown event type 'OrderTeleported'") as err:
        decode_message(_message(unknown), store.upcasters)
    assert err.value.handler == "decode" and "order-u" in err.value.reason
    old = RecordedEvent.from_envelope({**envelope, "schema_version": 0})
    with pytest.raises(BadMessage, match="no upcaster from OrderCreated v0"):
        decode_message(Message(Position("t", 0, 0), "order-u", recorded=old), store.upcasters)
