"""Payment: the PaymentProvider port, a simulated provider, and the activities.

The port is where a real provider (Stripe, Adyen, ...) plugs in. The simulator's
decisions (decline, transient error) are reproducible from the order id, so a test
or a benchmark knows in advance what happens to an order.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._support import FaultInjector, event_metadata, id_prefix, on_conflict_retry
from domain.payment import Payment
from eventstore import EventStore, Repository
from workflows.models import PAYMENT_DECLINED, Charged, ChargePayment, RefundPayment


@dataclass(frozen=True)
class ProviderDecision:
    """The provider's answer to a charge."""

    approved: bool
    payment_id: str
    reason: str = ""


class TransientProviderError(Exception):
    """The provider could not answer now (timeout, 5xx): retry later."""


class PaymentProvider(Protocol):
    """The payment provider port. Both calls are idempotent by ``idempotency_key``."""

    async def charge(
        self, *, order_id: str, amount_cents: int, idempotency_key: str
    ) -> ProviderDecision:
        """Charge the customer; a decline is an answer, not an exception."""
        ...

    async def refund(self, *, payment_id: str, amount_cents: int, idempotency_key: str) -> None:
        """Refund part of a charge; raises TransientProviderError when it cannot now."""
        ...


def draw(order_id: str, purpose: str) -> float:
    """A number in [0, 1) fixed by the order id and purpose (the simulator's dice)."""
    digest = hashlib.sha256(f"{purpose}:{order_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class SimulatedPaymentProvider:
    """A built-in provider: configurable latency, decline rate and transient-error rate.

    An order is declined when ``draw(order_id, "decline") < decline_rate``; a call
    fails transiently when ``draw(order_id, f"transient:{key}:{attempt}:{n}")`` is
    below ``transient_error_rate``, where ``attempt`` is the running activity's attempt
    and ``n`` counts this process's calls for the idempotency key.

    Why both: the count alone is per process, so in a fleet (or after a restart) every
    retry that lands on a fresh worker drew the same "call 1" as the attempt before it,
    and a key whose first draw fails failed all five compensation attempts and parked;
    the attempt alone would repeat the first draws for an operator's retry of a parked
    step. Together, every attempt gets a draw of its own.
    """

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        decline_rate: float = 0.0,
        transient_error_rate: float = 0.0,
        refund_outage_file: str = "",
    ) -> None:
        self.latency_ms = latency_ms
        self.refund_outage_file = refund_outage_file
        self.decline_rate = decline_rate
        self.transient_error_rate = transient_error_rate
        self._calls: Counter[str] = Counter()

    def will_decline(self, order_id: str) -> bool:
        """Whether this provider declines ``order_id`` (tests pick ids with it)."""
        return draw(order_id, "decline") < self.decline_rate

    async def _call(self, order_id: str, key: str) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        self._calls[key] += 1
        attempt = activity.info().attempt if activity.in_activity() else 0
        trial = f"transient:{key}:{attempt}:{self._calls[key]}"
        if draw(order_id, trial) < self.transient_error_rate:
            raise TransientProviderError(f"simulated provider unavailable ({key})")

    async def charge(
        self, *, order_id: str, amount_cents: int, idempotency_key: str
    ) -> ProviderDecision:
        """Approve or decline, reproducibly from the order id."""
        await self._call(order_id, idempotency_key)
        payment_id = "pay-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        if self.will_decline(order_id):
            return ProviderDecision(False, payment_id, "card declined (simulated)")
        return ProviderDecision(True, payment_id)

    async def refund(self, *, payment_id: str, amount_cents: int, idempotency_key: str) -> None:
        """Refunds succeed unless a transient error is drawn or the outage file exists
        (a drill: refunds park until the file goes, then a retry succeeds)."""
        # One stat of a local file: cheaper than a thread hop, so not offloaded.
        if self.refund_outage_file and os.path.exists(self.refund_outage_file):  # noqa: ASYNC240
            raise TransientProviderError("simulated refund outage")
        await self._call(payment_id, idempotency_key)


class PaymentActivities:
    """Charge and refund through the provider; record both on ``payment-<order_id>``."""

    def __init__(
        self,
        store: EventStore,
        provider: PaymentProvider,
        *,
        snapshot_every: int = 0,
        faults: FaultInjector | None = None,
    ) -> None:
        self.payments = Repository(store, Payment, snapshot_every=snapshot_every)
        self.provider = provider
        self.faults = faults or FaultInjector()

    @activity.defn(name="charge_payment")
    async def charge_payment(self, req: ChargePayment) -> Charged:
        """Charge the order's total; a decline is a non-retryable PaymentDeclined."""
        payment = await self.payments.load(req.order_id)
        if payment.payment_id is not None:
            # A retry after the commit: the charge is already recorded.
            return Charged(payment.payment_id, payment.charged_cents)
        if payment.status == "declined":
            raise _declined(req.order_id, payment.decline_reason or "declined")
        decision = await self.provider.charge(
            order_id=req.order_id,
            amount_cents=req.amount_cents,
            idempotency_key=req.idempotency_key,
        )

        async def record() -> None:
            fresh = await self.payments.load(req.order_id)
            if fresh.payment_id is not None or fresh.status == "declined":
                return
            if decision.approved:
                fresh.charge(decision.payment_id, req.amount_cents)
            else:
                fresh.decline(decision.reason)
            await self.payments.save(
                fresh, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
            )

        await on_conflict_retry(record)
        if not decision.approved:
            raise _declined(req.order_id, decision.reason)
        await self.faults.after_commit("charge_payment")
        return Charged(decision.payment_id, req.amount_cents)

    @activity.defn(name="refund_payment")
    async def refund_payment(self, req: RefundPayment) -> int:
        """Refund whatever is still refundable; returns the refunded cents (0: nothing)."""
        payment = await self.payments.load(req.order_id)
        amount = payment.refundable_cents
        if amount <= 0 or payment.payment_id is None:
            return 0
        await self.provider.refund(
            payment_id=payment.payment_id,
            amount_cents=amount,
            idempotency_key=f"refund-{req.ctx.workflow_id}-{req.ctx.step}",
        )
        payment.refund(payment.payment_id, amount, req.reason)
        await self.payments.save(
            payment, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
        )
        await self.faults.after_commit("refund_payment")
        return amount


def _declined(order_id: str, reason: str) -> ApplicationError:
    return ApplicationError(
        f"payment for order {order_id} declined: {reason}",
        type=PAYMENT_DECLINED,
        non_retryable=True,
    )
