"""The Order aggregate: draft -> submitted -> paid -> shipped -> delivered, or cancelled."""

from __future__ import annotations

from typing import Any, NamedTuple

from domain.aggregate import Aggregate
from domain.events import (
    DomainEvent,
    OrderCancelled,
    OrderCreated,
    OrderDelivered,
    OrderItemAdded,
    OrderItemRemoved,
    OrderReturnRegistered,
    OrderReturnReleased,
    OrderShipped,
    OrderSubmitted,
    PaymentReceived,
    order_stream,
)

ORDER_STATES = ("new", "draft", "submitted", "paid", "shipped", "delivered", "cancelled")
"""Every value ``Order.status`` takes; "new" means no events yet."""


class LineItem(NamedTuple):
    """One line of an order, priced when it was added."""

    sku: str
    name: str
    quantity: int
    unit_price_cents: int

    @property
    def total_cents(self) -> int:
        """Quantity times unit price."""
        return self.quantity * self.unit_price_cents


class Order(Aggregate):
    """A customer's order (id = order id)."""

    stream_type = "Order"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.customer_id: str | None = None
        self.lines: dict[str, LineItem] = {}
        self.total_cents = 0
        self.payment_id: str | None = None
        self.tracking_number: str | None = None
        self.carrier: str | None = None
        self.cancel_reason: str | None = None
        #: units claimed by each open or refunded return (released ones are dropped)
        self.returns: dict[str, dict[str, int]] = {}

    @property
    def stream_id(self) -> str:
        """``order-<order_id>``."""
        return order_stream(self.id)

    @property
    def state_name(self) -> str:
        """The order status."""
        return self.status

    # --- commands -----------------------------------------------------------------

    def create(self, customer_id: str) -> None:
        """Open the order as a draft for ``customer_id``."""
        self._require_state("create", "new")
        self._require_text("create", "customer_id", customer_id)
        self._raise_event(OrderCreated(order_id=self.id, customer_id=customer_id))

    def add_item(self, sku: str, name: str, quantity: int, unit_price_cents: int) -> None:
        """Add a line; each SKU appears on at most one line."""
        self._require_state("add_item", "draft")
        self._require_text("add_item", "sku", sku)
        self._require_positive("add_item", "quantity", quantity)
        self._require_non_negative("add_item", "unit_price_cents", unit_price_cents)
        if sku in self.lines:
            self._refuse("add_item", f"duplicate line: sku {sku} is already on the order")
        self._raise_event(
            OrderItemAdded(sku=sku, name=name, quantity=quantity, unit_price_cents=unit_price_cents)
        )

    def remove_item(self, sku: str) -> None:
        """Remove the line for ``sku``."""
        self._require_state("remove_item", "draft")
        if sku not in self.lines:
            self._refuse("remove_item", f"sku {sku} is not on the order")
        self._raise_event(OrderItemRemoved(sku=sku))

    def submit(self) -> None:
        """Fix the lines and the total; an empty order cannot be submitted."""
        self._require_state("submit", "draft")
        if not self.lines:
            self._refuse("submit", "the order has no lines")
        total = sum(line.total_cents for line in self.lines.values())
        self._raise_event(OrderSubmitted(total_cents=total))

    def receive_payment(self, payment_id: str, amount_cents: int) -> None:
        """Record full payment of the submitted total."""
        self._require_state("receive_payment", "submitted")
        self._require_text("receive_payment", "payment_id", payment_id)
        if amount_cents != self.total_cents:
            self._refuse(
                "receive_payment",
                f"amount {amount_cents} cents does not match the total {self.total_cents} cents",
            )
        self._raise_event(PaymentReceived(payment_id=payment_id, amount_cents=amount_cents))

    def ship(self, tracking_number: str, carrier: str) -> None:
        """Hand the paid order to a carrier."""
        self._require_state("ship", "paid")
        self._require_text("ship", "tracking_number", tracking_number)
        self._require_text("ship", "carrier", carrier)
        self._raise_event(OrderShipped(tracking_number=tracking_number, carrier=carrier))

    def deliver(self) -> None:
        """Record delivery of the shipped order."""
        self._require_state("deliver", "shipped")
        self._raise_event(OrderDelivered())

    def cancel(self, reason: str) -> None:
        """Cancel an order that has not shipped (compensations undo payment and stock)."""
        self._require_state("cancel", "draft", "submitted", "paid")
        self._require_text("cancel", "reason", reason)
        self._raise_event(OrderCancelled(reason=reason))

    def returned_units(self, sku: str) -> int:
        """Units of ``sku`` claimed by this order's returns so far."""
        return sum(lines.get(sku, 0) for lines in self.returns.values())

    def returnable_units(self, sku: str) -> int:
        """Units of ``sku`` that may still be returned (0 unless delivered)."""
        line = self.lines.get(sku)
        if line is None or self.status != "delivered":
            return 0
        return line.quantity - self.returned_units(sku)

    def register_return(self, return_id: str, lines: dict[str, int]) -> None:
        """Claim ``lines`` (sku -> units) for a return of the delivered order.

        The rule: across all returns, the units returned per line never exceed the
        units delivered.
        """
        self._require_state("return", "delivered")
        self._require_text("return", "return_id", return_id)
        if return_id in self.returns:
            self._refuse("return", f"return {return_id} is already registered")
        if not lines:
            self._refuse("return", "a return needs at least one line")
        for sku, quantity in sorted(lines.items()):
            if sku not in self.lines:
                self._refuse("return", f"sku {sku} is not on the order")
            self._require_positive("return", f"quantity of {sku}", quantity)
            returnable = self.returnable_units(sku)
            if quantity > returnable:
                self._refuse(
                    "return",
                    f"{quantity} units of {sku} exceed the {returnable} returnable "
                    f"({self.lines[sku].quantity} delivered, {self.returned_units(sku)} "
                    "already returned)",
                )
        self._raise_event(OrderReturnRegistered(return_id=return_id, lines=dict(lines)))

    def release_return(self, return_id: str) -> None:
        """Give a cancelled or expired return's units back to the returnable pool."""
        self._require_state("release_return", "delivered")
        if return_id not in self.returns:
            self._refuse("release_return", f"return {return_id} is not registered")
        self._raise_event(OrderReturnReleased(return_id=return_id))

    # --- state changes ------------------------------------------------------------

    def _when(self, event: DomainEvent) -> None:
        match event:
            case OrderCreated():
                self.status = "draft"
                self.customer_id = event.customer_id
            case OrderItemAdded():
                line = LineItem(event.sku, event.name, event.quantity, event.unit_price_cents)
                self.lines[event.sku] = line
                self.total_cents += line.total_cents
            case OrderItemRemoved():
                self.total_cents -= self.lines.pop(event.sku).total_cents
            case OrderSubmitted():
                self.status = "submitted"
                self.total_cents = event.total_cents
            case PaymentReceived():
                self.status = "paid"
                self.payment_id = event.payment_id
            case OrderShipped():
                self.status = "shipped"
                self.tracking_number = event.tracking_number
                self.carrier = event.carrier
            case OrderDelivered():
                self.status = "delivered"
            case OrderCancelled():
                self.status = "cancelled"
                self.cancel_reason = event.reason
            case OrderReturnRegistered():
                self.returns[event.return_id] = dict(event.lines)
            case OrderReturnReleased():
                del self.returns[event.return_id]
            case _:
                self._unknown_event(event)

    # --- snapshots ----------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """JSON-safe state; lines keyed by sku in sorted order."""
        return {
            "carrier": self.carrier,
            "cancel_reason": self.cancel_reason,
            "customer_id": self.customer_id,
            "lines": {
                sku: {
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_cents": line.unit_price_cents,
                }
                for sku, line in sorted(self.lines.items())
            },
            "payment_id": self.payment_id,
            "returns": {
                rid: dict(sorted(lines.items())) for rid, lines in sorted(self.returns.items())
            },
            "status": self.status,
            "total_cents": self.total_cents,
            "tracking_number": self.tracking_number,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.carrier = state["carrier"]
        self.cancel_reason = state["cancel_reason"]
        self.customer_id = state["customer_id"]
        self.lines = {
            sku: LineItem(sku, line["name"], line["quantity"], line["unit_price_cents"])
            for sku, line in state["lines"].items()
        }
        self.payment_id = state["payment_id"]
        # Why .get: snapshots taken before returns existed have no "returns" key.
        self.returns = {rid: dict(lines) for rid, lines in state.get("returns", {}).items()}
        self.status = state["status"]
        self.total_cents = state["total_cents"]
        self.tracking_number = state["tracking_number"]
