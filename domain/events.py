"""Domain events: immutable, past-tense facts, registered by ``event_type``.

An event carries only its business data. The envelope (event id, stream id,
version, positions, metadata) belongs to the event store. Money is integer cents.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

from domain.errors import UnknownEventType

EVENT_TYPES: dict[str, type[DomainEvent]] = {}
"""Every concrete event class, keyed by its ``event_type``."""


class DomainEvent(BaseModel):
    """Base of all domain events; each subclass registers itself in ``EVENT_TYPES``.

    ``event_type`` defaults to the class name; ``schema_version`` rises when the
    payload shape changes (the event store upcasts older payloads).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Give the subclass its ``event_type`` and register it."""
        super().__pydantic_init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__
        existing = EVENT_TYPES.get(cls.event_type)
        # Why: a module executed twice (importlib.reload, a fresh import under another
        # name) redefines the same class; only a *different* class is a clash.
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"event type {cls.event_type!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        EVENT_TYPES[cls.event_type] = cls


def event_class(event_type: str) -> type[DomainEvent]:
    """Return the class registered under ``event_type``; raise ``UnknownEventType``."""
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def order_stream(order_id: str) -> str:
    """Stream id of an order."""
    return f"order-{order_id}"


def inventory_stream(sku: str) -> str:
    """Stream id of one SKU's inventory."""
    return f"inventory-{sku}"


def payment_stream(order_id: str) -> str:
    """Stream id of an order's payment."""
    return f"payment-{order_id}"


# --- Order stream: "order-<order_id>" -------------------------------------------------


class OrderCreated(DomainEvent):
    """A draft order was opened for a customer."""

    order_id: str
    customer_id: str


class OrderItemAdded(DomainEvent):
    """A line was added to a draft order."""

    sku: str
    name: str
    quantity: PositiveInt
    unit_price_cents: NonNegativeInt


class OrderItemRemoved(DomainEvent):
    """A line was removed from a draft order."""

    sku: str


class OrderSubmitted(DomainEvent):
    """The customer submitted the order; its lines are now fixed."""

    total_cents: NonNegativeInt


class PaymentReceived(DomainEvent):
    """The order was paid in full."""

    payment_id: str
    amount_cents: NonNegativeInt


class OrderShipped(DomainEvent):
    """The order left the warehouse."""

    tracking_number: str
    carrier: str


class OrderDelivered(DomainEvent):
    """The carrier delivered the order."""


class OrderCancelled(DomainEvent):
    """The order was cancelled before shipping."""

    reason: str


# --- Inventory stream: "inventory-<sku>" ----------------------------------------------


class ProductRegistered(DomainEvent):
    """A SKU entered the catalogue."""

    sku: str
    name: str
    unit_price_cents: NonNegativeInt


class ProductPriceChanged(DomainEvent):
    """A SKU's unit price changed."""

    unit_price_cents: NonNegativeInt


class StockAdded(DomainEvent):
    """Units of a SKU arrived in stock."""

    quantity: PositiveInt


class StockReserved(DomainEvent):
    """Available units were set aside for an order."""

    reservation_id: str
    order_id: str
    quantity: PositiveInt


class StockReservationReleased(DomainEvent):
    """A reservation was given back to available stock (compensation)."""

    reservation_id: str
    order_id: str
    quantity: PositiveInt


class StockSold(DomainEvent):
    """A reservation became a sale when its order shipped."""

    reservation_id: str
    order_id: str
    quantity: PositiveInt


# --- Payment stream: "payment-<order_id>" ---------------------------------------------


class PaymentCharged(DomainEvent):
    """The customer was charged for an order."""

    payment_id: str
    order_id: str
    amount_cents: PositiveInt


class PaymentDeclined(DomainEvent):
    """The payment provider declined the charge."""

    order_id: str
    reason: str


class PaymentRefunded(DomainEvent):
    """Part or all of a charge was refunded (compensation)."""

    payment_id: str
    amount_cents: PositiveInt
    reason: str


# --- Returns: "return-<return_id>", plus facts on the order and inventory streams -----


def return_stream(return_id: str) -> str:
    """Stream id of one return."""
    return f"return-{return_id}"


class ReturnLine(BaseModel):
    """One returned line, priced at the order's unit price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str
    quantity: PositiveInt
    unit_price_cents: NonNegativeInt


class OrderReturnRegistered(DomainEvent):
    """Units of a delivered order were claimed by a return (on the order stream).

    Why on the order stream: the rule "returned <= delivered, across all returns" is
    guarded by the order stream's expected version, so two returns racing for the
    same units cannot both be registered.
    """

    return_id: str
    lines: dict[str, PositiveInt]


class OrderReturnReleased(DomainEvent):
    """A return's claim on the order's units was given back (cancelled or expired)."""

    return_id: str


class ReturnOpened(DomainEvent):
    """A customer opened a return for lines of a delivered order."""

    return_id: str
    order_id: str
    customer_id: str
    reason: str
    lines: list[ReturnLine]
    total_cents: NonNegativeInt


class ReturnReceived(DomainEvent):
    """The returned goods arrived at the warehouse."""


class ReturnExpired(DomainEvent):
    """The goods did not arrive before the deadline."""

    reason: str


class ReturnCancelled(DomainEvent):
    """The return was cancelled (the saga compensated)."""

    reason: str


class ReturnRefunded(DomainEvent):
    """The returned lines' value was refunded to the customer."""

    payment_id: str
    amount_cents: NonNegativeInt


class ReturnCompleted(DomainEvent):
    """Refunded and the customer notified: the return is closed."""


class StockReturned(DomainEvent):
    """Returned units went back into available stock (on the inventory stream)."""

    return_id: str
    order_id: str
    quantity: PositiveInt


class StockReturnReversed(DomainEvent):
    """Restocked units of a return were taken out again (compensation)."""

    return_id: str
    order_id: str
    quantity: PositiveInt
