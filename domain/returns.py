"""The Return aggregate: opened -> received -> refunded -> completed; or expired / cancelled.

A pure state machine on ``return-<return_id>``. The rule that units returned never
exceed units delivered lives on the Order (``Order.register_return``), whose stream
guards it against racing returns; the Return records the return's own life.
"""

from __future__ import annotations

from typing import Any

from domain.aggregate import Aggregate
from domain.events import (
    DomainEvent,
    ReturnCancelled,
    ReturnCompleted,
    ReturnExpired,
    ReturnLine,
    ReturnOpened,
    ReturnReceived,
    ReturnRefunded,
    return_stream,
)

RETURN_STATES = ("new", "opened", "received", "refunded", "completed", "expired", "cancelled")
"""Every value ``Return.status`` takes; "new" means no events yet."""


class Return(Aggregate):
    """One return of a delivered order (id = return id)."""

    stream_type = "Return"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.order_id: str | None = None
        self.customer_id: str | None = None
        self.reason = ""
        self.lines: list[ReturnLine] = []
        self.total_cents = 0
        self.refunded_cents = 0
        self.payment_id: str | None = None
        self.close_reason = ""

    @property
    def stream_id(self) -> str:
        """``return-<return_id>``."""
        return return_stream(self.id)

    @property
    def state_name(self) -> str:
        """The return status."""
        return self.status

    # --- commands -----------------------------------------------------------------

    def open(self, order_id: str, customer_id: str, reason: str, lines: list[ReturnLine]) -> None:
        """Open the return for priced ``lines`` (one per SKU)."""
        self._require_state("open", "new")
        self._require_text("open", "order_id", order_id)
        self._require_text("open", "reason", reason)
        if not lines:
            self._refuse("open", "a return needs at least one line")
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            self._refuse("open", "each sku appears on at most one line")
        total = sum(line.quantity * line.unit_price_cents for line in lines)
        self._raise_event(
            ReturnOpened(
                return_id=self.id,
                order_id=order_id,
                customer_id=customer_id,
                reason=reason,
                lines=list(lines),
                total_cents=total,
            )
        )

    def receive(self) -> None:
        """The goods arrived."""
        self._require_state("receive", "opened")
        self._raise_event(ReturnReceived())

    def expire(self, reason: str) -> None:
        """The goods did not arrive in time."""
        self._require_state("expire", "opened")
        self._raise_event(ReturnExpired(reason=reason))

    def cancel(self, reason: str) -> None:
        """Cancel before the refund (compensation of opening)."""
        self._require_state("cancel", "opened", "received")
        self._require_text("cancel", "reason", reason)
        self._raise_event(ReturnCancelled(reason=reason))

    def refund(self, payment_id: str, amount_cents: int) -> None:
        """Record the refund of the received goods' value."""
        self._require_state("refund", "received")
        self._require_non_negative("refund", "amount_cents", amount_cents)
        if amount_cents != self.total_cents:
            self._refuse(
                "refund",
                f"amount {amount_cents} cents does not match the total {self.total_cents} cents",
            )
        self._raise_event(ReturnRefunded(payment_id=payment_id, amount_cents=amount_cents))

    def complete(self) -> None:
        """Close the refunded return."""
        self._require_state("complete", "refunded")
        self._raise_event(ReturnCompleted())

    # --- state changes ------------------------------------------------------------

    def _when(self, event: DomainEvent) -> None:
        match event:
            case ReturnOpened():
                self.status = "opened"
                self.order_id = event.order_id
                self.customer_id = event.customer_id
                self.reason = event.reason
                self.lines = list(event.lines)
                self.total_cents = event.total_cents
            case ReturnReceived():
                self.status = "received"
            case ReturnExpired():
                self.status = "expired"
                self.close_reason = event.reason
            case ReturnCancelled():
                self.status = "cancelled"
                self.close_reason = event.reason
            case ReturnRefunded():
                self.status = "refunded"
                self.payment_id = event.payment_id
                self.refunded_cents = event.amount_cents
            case ReturnCompleted():
                self.status = "completed"
            case _:
                self._unknown_event(event)

    # --- snapshots ----------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "close_reason": self.close_reason,
            "customer_id": self.customer_id,
            "lines": [line.model_dump() for line in self.lines],
            "order_id": self.order_id,
            "payment_id": self.payment_id,
            "reason": self.reason,
            "refunded_cents": self.refunded_cents,
            "status": self.status,
            "total_cents": self.total_cents,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.close_reason = state["close_reason"]
        self.customer_id = state["customer_id"]
        self.lines = [ReturnLine(**line) for line in state["lines"]]
        self.order_id = state["order_id"]
        self.payment_id = state["payment_id"]
        self.reason = state["reason"]
        self.refunded_cents = state["refunded_cents"]
        self.status = state["status"]
        self.total_cents = state["total_cents"]
