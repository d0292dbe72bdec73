"""The Payment aggregate: one per order, tracking the charge and its refunds."""

from __future__ import annotations

from typing import Any

from domain.aggregate import Aggregate
from domain.errors import RefundExceedsCharge
from domain.events import (
    DomainEvent,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    payment_stream,
)

PAYMENT_STATES = ("new", "charged", "declined", "partially_refunded", "refunded")
"""Every value ``Payment.status`` takes."""


class Payment(Aggregate):
    """The payment of one order (id = order id).

    A declined charge may be retried; a successful charge happens at most once and
    can then be refunded in one or more parts, never beyond the charged amount.
    """

    stream_type = "Payment"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status = "new"
        self.payment_id: str | None = None
        self.charged_cents = 0
        self.refunded_cents = 0
        self.decline_reason: str | None = None

    @property
    def stream_id(self) -> str:
        """``payment-<order_id>``."""
        return payment_stream(self.id)

    @property
    def state_name(self) -> str:
        """The payment status."""
        return self.status

    @property
    def refundable_cents(self) -> int:
        """What may still be refunded."""
        return self.charged_cents - self.refunded_cents

    # --- commands -----------------------------------------------------------------

    def charge(self, payment_id: str, amount_cents: int) -> None:
        """Record a successful charge of ``amount_cents``."""
        self._require_state("charge", "new", "declined")
        self._require_text("charge", "payment_id", payment_id)
        self._require_positive("charge", "amount_cents", amount_cents)
        self._raise_event(
            PaymentCharged(payment_id=payment_id, order_id=self.id, amount_cents=amount_cents)
        )

    def decline(self, reason: str) -> None:
        """Record that the provider declined the charge."""
        self._require_state("decline", "new", "declined")
        self._require_text("decline", "reason", reason)
        self._raise_event(PaymentDeclined(order_id=self.id, reason=reason))

    def refund(self, payment_id: str, amount_cents: int, reason: str) -> None:
        """Refund part or all of the charge ``payment_id`` (compensation)."""
        self._require_state("refund", "charged", "partially_refunded")
        self._require_positive("refund", "amount_cents", amount_cents)
        self._require_text("refund", "reason", reason)
        if payment_id != self.payment_id:
            self._refuse("refund", f"payment {payment_id} is not the charge {self.payment_id}")
        if amount_cents > self.refundable_cents:
            raise RefundExceedsCharge(self.id, self.status, amount_cents, self.refundable_cents)
        self._raise_event(
            PaymentRefunded(payment_id=payment_id, amount_cents=amount_cents, reason=reason)
        )

    # --- state changes ------------------------------------------------------------

    def _when(self, event: DomainEvent) -> None:
        match event:
            case PaymentCharged():
                self.status = "charged"
                self.payment_id = event.payment_id
                self.charged_cents = event.amount_cents
            case PaymentDeclined():
                self.status = "declined"
                self.decline_reason = event.reason
            case PaymentRefunded():
                self.refunded_cents += event.amount_cents
                fully = self.refunded_cents >= self.charged_cents
                self.status = "refunded" if fully else "partially_refunded"
            case _:
                self._unknown_event(event)

    # --- snapshots ----------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """JSON-safe state."""
        return {
            "charged_cents": self.charged_cents,
            "decline_reason": self.decline_reason,
            "payment_id": self.payment_id,
            "refunded_cents": self.refunded_cents,
            "status": self.status,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.charged_cents = state["charged_cents"]
        self.decline_reason = state["decline_reason"]
        self.payment_id = state["payment_id"]
        self.refunded_cents = state["refunded_cents"]
        self.status = state["status"]
