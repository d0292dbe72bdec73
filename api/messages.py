"""The API's commands (change something) and queries (read something), as plain data."""

from __future__ import annotations

from dataclasses import dataclass

from domain.commands import PlaceOrder

# --- commands -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceOrderCommand:
    """Start an order's saga; ``idempotency_key`` makes retries return the same order."""

    customer_id: str
    lines: tuple[tuple[str, int], ...]
    idempotency_key: str | None
    user_id: str

    def to_domain(self, order_id: str) -> PlaceOrder:
        """The domain command for ``order_id``."""
        from domain.commands import OrderLine

        return PlaceOrder(
            order_id=order_id,
            customer_id=self.customer_id,
            lines=[OrderLine(sku=sku, quantity=qty) for sku, qty in self.lines],
        )


@dataclass(frozen=True)
class CancelOrderCommand:
    """Cancel an order before it ships (compensates everything done)."""

    order_id: str
    reason: str


@dataclass(frozen=True)
class ShipOrderCommand:
    """Record the shipment of a confirmed order."""

    order_id: str
    tracking_number: str
    carrier: str


@dataclass(frozen=True)
class DeliverOrderCommand:
    """Record the delivery of a shipped order."""

    order_id: str


@dataclass(frozen=True)
class RetryCompensationCommand:
    """Retry a parked compensation."""

    order_id: str
    step: str
    note: str


@dataclass(frozen=True)
class ResolveCompensationCommand:
    """Mark a parked compensation done by hand."""

    order_id: str
    step: str
    note: str


@dataclass(frozen=True)
class RegisterProductCommand:
    """Add a SKU to the catalogue."""

    sku: str
    name: str
    unit_price_cents: int
    user_id: str


@dataclass(frozen=True)
class RestockCommand:
    """Add units of a SKU."""

    sku: str
    quantity: int
    idempotency_key: str | None
    user_id: str


@dataclass(frozen=True)
class ReplayDeadLetterCommand:
    """Apply a dead letter again (after a fix), then its stream's parked messages."""

    dead_letter_id: int


@dataclass(frozen=True)
class SkipDeadLetterCommand:
    """Give up on a dead letter and release its stream's parked messages."""

    dead_letter_id: int


COMMANDS: tuple[type, ...] = (
    PlaceOrderCommand,
    CancelOrderCommand,
    ShipOrderCommand,
    DeliverOrderCommand,
    RetryCompensationCommand,
    ResolveCompensationCommand,
    RegisterProductCommand,
    RestockCommand,
    ReplayDeadLetterCommand,
    SkipDeadLetterCommand,
)

# --- queries ------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderSummaryQuery:
    """The order summary read model; waits for ``consistency_token`` when given."""

    order_id: str
    consistency_token: str | None = None


@dataclass(frozen=True)
class OrderEventsQuery:
    """The order's raw event stream."""

    order_id: str


@dataclass(frozen=True)
class SagaStateQuery:
    """The saga's live state from its workflow query."""

    order_id: str


@dataclass(frozen=True)
class CustomerOrdersQuery:
    """A customer's orders, newest first."""

    customer_id: str
    limit: int


@dataclass(frozen=True)
class ProductQuery:
    """A catalogue entry with its stock, from the event store."""

    sku: str


@dataclass(frozen=True)
class InventoryQuery:
    """The inventory read model of one SKU."""

    sku: str


@dataclass(frozen=True)
class DailySalesQuery:
    """Sales per day, newest first."""

    limit: int


@dataclass(frozen=True)
class ProductSalesQuery:
    """Units and revenue per product."""

    limit: int


@dataclass(frozen=True)
class SagaOutcomesQuery:
    """Saga outcome counts per saga type."""


@dataclass(frozen=True)
class ParkedSagasQuery:
    """Sagas waiting for an operator."""

    limit: int


@dataclass(frozen=True)
class DeadLettersQuery:
    """Dead letters, by status."""

    status: str | None


QUERIES: tuple[type, ...] = (
    OrderSummaryQuery,
    OrderEventsQuery,
    SagaStateQuery,
    CustomerOrdersQuery,
    ProductQuery,
    InventoryQuery,
    DailySalesQuery,
    ProductSalesQuery,
    SagaOutcomesQuery,
    ParkedSagasQuery,
    DeadLettersQuery,
)
