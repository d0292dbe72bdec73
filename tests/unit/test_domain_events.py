"""Event registry, serialisation round trips and stream ids."""

import pytest
from pydantic import ValidationError

from domain import (
    AGGREGATE_TYPES,
    EVENT_TYPES,
    DomainEvent,
    Inventory,
    Order,
    OrderCreated,
    OrderDelivered,
    OrderItemAdded,
    Payment,
    UnknownEventType,
    event_class,
    inventory_stream,
    order_stream,
    payment_stream,
)
from domain import events as ev

SAMPLES: list[DomainEvent] = [
    ev.OrderCreated(order_id="o-1", customer_id="c-1"),
    ev.OrderItemAdded(sku="SKU-1", name="Mug", quantity=2, unit_price_cents=1250),
    ev.OrderItemRemoved(sku="SKU-1"),
    ev.OrderSubmitted(total_cents=2500),
    ev.PaymentReceived(payment_id="p-1", amount_cents=2500),
    ev.OrderShipped(tracking_number="TN1", carrier="DHL"),
    ev.OrderDelivered(),
    ev.OrderCancelled(reason="customer asked"),
    ev.ProductRegistered(sku="SKU-1", name="Mug", unit_price_cents=1250),
    ev.ProductPriceChanged(unit_price_cents=1300),
    ev.StockAdded(quantity=10),
    ev.StockReserved(reservation_id="r-1", order_id="o-1", quantity=2),
    ev.StockReservationReleased(reservation_id="r-1", order_id="o-1", quantity=2),
    ev.StockSold(reservation_id="r-1", order_id="o-1", quantity=2),
    ev.PaymentCharged(payment_id="p-1", order_id="o-1", amount_cents=2500),
    ev.PaymentDeclined(order_id="o-1", reason="card expired"),
    ev.PaymentRefunded(payment_id="p-1", amount_cents=500, reason="order cancelled"),
]


def test_every_domain_event_is_registered_under_its_class_name():
    names = {type(event).__name__ for event in SAMPLES}
    assert names <= set(EVENT_TYPES)
    for event in SAMPLES:
        assert type(event).event_type == type(event).__name__
        assert EVENT_TYPES[type(event).event_type] is type(event)
        assert type(event).schema_version == 1


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_an_event_survives_a_round_trip_through_its_registered_class(event):
    data = event.model_dump()
    assert event_class(event.event_type).model_validate(data) == event


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_an_event_survives_a_json_round_trip(event):
    raw = event.model_dump_json()
    assert event_class(event.event_type).model_validate_json(raw) == event


def test_looking_up_an_unknown_event_type_raises_unknown_event_type():
    with pytest.raises(UnknownEventType) as info:
        event_class("OrderTeleported")
    assert info.value.event_type == "OrderTeleported"
    assert "OrderTeleported" in str(info.value)


def test_a_subclass_may_choose_its_event_type():
    class LegacyThing(DomainEvent):
        event_type = "test.LegacyThingHappened"
        schema_version = 3

    try:
        assert event_class("test.LegacyThingHappened") is LegacyThing
        assert LegacyThing.schema_version == 3
    finally:
        del EVENT_TYPES["test.LegacyThingHappened"]


def test_registering_a_second_class_under_a_taken_event_type_raises():
    with pytest.raises(TypeError, match="already registered"):

        class Impostor(DomainEvent):
            event_type = "OrderCreated"

    assert EVENT_TYPES["OrderCreated"] is OrderCreated


def test_events_are_immutable():
    event = OrderCreated(order_id="o-1", customer_id="c-1")
    with pytest.raises(ValidationError):
        event.customer_id = "c-2"


def test_events_refuse_unknown_fields():
    with pytest.raises(ValidationError):
        OrderDelivered.model_validate({"surprise": 1})


def test_events_refuse_non_positive_quantities():
    with pytest.raises(ValidationError):
        OrderItemAdded(sku="A", name="a", quantity=0, unit_price_cents=1)


def test_stream_ids_are_built_from_the_entity_id():
    assert order_stream("o-1") == "order-o-1"
    assert inventory_stream("SKU-1") == "inventory-SKU-1"
    assert payment_stream("o-1") == "payment-o-1"
    assert Order("o-1").stream_id == "order-o-1"
    assert Inventory("SKU-1").stream_id == "inventory-SKU-1"
    assert Payment("o-1").stream_id == "payment-o-1"


def test_aggregate_types_are_keyed_by_stream_type():
    from domain.returns import Return

    expected = {"Order": Order, "Inventory": Inventory, "Payment": Payment, "Return": Return}
    assert expected == AGGREGATE_TYPES
