"""The returns saga's activities: open/close the return (and its claim on the order),
receive, restock / unstock, refund through the payment provider, notify.

Each is idempotent: it checks the state it would create before writing, and its
events carry deterministic ids (workflow id, step, stream), so a retry after a
commit writes nothing twice. Compensations are no-ops when their action never
happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._support import (
    FaultInjector,
    business_failure,
    event_metadata,
    id_prefix,
    on_conflict_retry,
)
from activities.notification import Notifier
from activities.payment import PaymentProvider, SimulatedPaymentProvider
from activities.wiring import ActivityDeps
from domain.errors import DomainError
from domain.events import ReturnLine, payment_stream
from domain.inventory import Inventory
from domain.order import Order
from domain.payment import Payment
from domain.returns import Return
from eventstore import EventStore, Repository, deterministic_event_id
from workflows.models import COMMAND_REFUSED, StepContext
from workflows.returns_models import (
    CloseReturn,
    NotifyReturn,
    OpenReturn,
    PricedReturnLine,
    ReceiveReturn,
    RefundReturn,
    RestockReturn,
    ReturnOpenedResult,
)


def _ids(ctx: StepContext, stream: str) -> tuple[str, str, str]:
    # Why the stream in the prefix: one step may write to two streams; the same
    # (workflow, step, index) id on both would make the second append a silent no-op.
    return (*id_prefix(ctx), stream)


class ReturnActivities:
    """Activities on the return, order, inventory and payment streams."""

    def __init__(
        self,
        store: EventStore,
        provider: PaymentProvider,
        notifier: Notifier,
        *,
        snapshot_every: int = 0,
        faults: FaultInjector | None = None,
    ) -> None:
        self.store = store
        self.returns = Repository(store, Return, snapshot_every=snapshot_every)
        self.orders = Repository(store, Order, snapshot_every=snapshot_every)
        self.inventory = Repository(store, Inventory, snapshot_every=snapshot_every)
        self.payments = Repository(store, Payment, snapshot_every=snapshot_every)
        self.provider = provider
        self.notifier = notifier
        self.faults = faults or FaultInjector()

    @activity.defn(name="open_return")
    async def open_return(self, req: OpenReturn) -> ReturnOpenedResult:
        """Claim the units on the order, then open the return priced from the order."""
        meta = event_metadata(req.ctx)

        async def claim() -> Order:
            order = await self.orders.load(req.order_id)
            if req.return_id not in order.returns:
                try:
                    # The rule lives here: delivered, and returned <= delivered.
                    order.register_return(req.return_id, {li.sku: li.quantity for li in req.lines})
                except DomainError as err:
                    raise business_failure(err) from err
                await self.orders.save(order, metadata=meta, id_prefix=_ids(req.ctx, "order"))
            return order

        order = await on_conflict_retry(claim)
        lines = [
            ReturnLine(
                sku=li.sku,
                quantity=li.quantity,
                unit_price_cents=order.lines[li.sku].unit_price_cents,
            )
            for li in req.lines
        ]

        async def open_stream() -> Return:
            ret = await self.returns.load(req.return_id)
            if ret.status == "new":
                ret.open(req.order_id, req.customer_id, req.reason, lines)
                await self.returns.save(ret, metadata=meta, id_prefix=_ids(req.ctx, "return"))
            return ret

        ret = await on_conflict_retry(open_stream)
        await self.faults.after_commit("open_return")
        return ReturnOpenedResult(
            [PricedReturnLine(li.sku, li.quantity, li.unit_price_cents) for li in ret.lines],
            ret.total_cents,
        )

    @activity.defn(name="close_return")
    async def close_return(self, req: CloseReturn) -> bool:
        """Expire or cancel the return, then release its units on the order.

        A no-op for what never happened: no return stream, no claim on the order.
        Returns whether anything was written.
        """
        meta = event_metadata(req.ctx)

        async def close() -> bool:
            ret = await self.returns.load(req.return_id)
            if req.expired and ret.status == "opened":
                ret.expire(req.reason)
            elif not req.expired and ret.status in ("opened", "received"):
                ret.cancel(req.reason)
            else:
                return False
            await self.returns.save(ret, metadata=meta, id_prefix=_ids(req.ctx, "return"))
            return True

        async def release() -> bool:
            ret = await self.returns.load(req.return_id)
            if ret.status in ("refunded", "completed"):
                # Never release the units of a refunded return: they are returned.
                return False
            order = await self.orders.load(req.order_id)
            if req.return_id not in order.returns:
                return False
            order.release_return(req.return_id)
            await self.orders.save(order, metadata=meta, id_prefix=_ids(req.ctx, "order"))
            return True

        closed = await on_conflict_retry(close)
        released = await on_conflict_retry(release)
        return closed or released

    @activity.defn(name="receive_return")
    async def receive_return(self, req: ReceiveReturn) -> None:
        """Record the goods' arrival (once)."""

        async def attempt() -> None:
            ret = await self.returns.load(req.return_id)
            if ret.status != "opened":
                if ret.status == "received":
                    return
                raise business_failure_of(ret, "receive")
            ret.receive()
            await self.returns.save(
                ret, metadata=event_metadata(req.ctx), id_prefix=_ids(req.ctx, "return")
            )

        await on_conflict_retry(attempt)

    @activity.defn(name="restock_return")
    async def restock_return(self, req: RestockReturn) -> bool:
        """Put the line's units back in available stock; False if already restocked."""

        async def attempt() -> bool:
            inv = await self.inventory.load(req.sku, entity=("return_id", req.return_id))
            if inv.restocked_return(req.return_id) is not None:
                return False
            try:
                inv.restock_return(req.return_id, req.order_id, req.quantity)
            except DomainError as err:
                raise business_failure(err) from err
            await self.inventory.save(
                inv, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
            )
            return True

        restocked = await on_conflict_retry(attempt)
        await self.faults.after_commit("restock_return")
        return restocked

    @activity.defn(name="unstock_return")
    async def unstock_return(self, req: RestockReturn) -> bool:
        """Take the line's restocked units out again; False when never restocked."""

        async def attempt() -> bool:
            inv = await self.inventory.load(req.sku, entity=("return_id", req.return_id))
            if inv.restocked_return(req.return_id) is None:
                return False
            try:
                inv.reverse_return(req.return_id)
            except DomainError as err:
                # The units were reserved meanwhile: park for an operator.
                raise business_failure(err) from err
            await self.inventory.save(
                inv, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
            )
            return True

        return await on_conflict_retry(attempt)

    @activity.defn(name="refund_return")
    async def refund_return(self, req: RefundReturn) -> int:
        """Refund the return's total through the provider, record it on the payment
        and the return; returns the refunded cents (a retry returns the recorded ones)."""
        ret = await self.returns.load(req.return_id)
        if ret.status in ("refunded", "completed"):
            return ret.refunded_cents
        if ret.status != "received":
            raise business_failure_of(ret, "refund")
        payment = await self.payments.load(req.order_id)
        if payment.payment_id is None:
            raise ApplicationError(
                f"order {req.order_id} has no charge to refund",
                type=COMMAND_REFUSED,
                non_retryable=True,
            )
        payment_id = payment.payment_id
        # Why the return id as the key: the provider refunds once per return,
        # however many times this activity runs.
        await self.provider.refund(
            payment_id=payment_id,
            amount_cents=req.amount_cents,
            idempotency_key=f"refund-return-{req.return_id}",
        )
        meta = event_metadata(req.ctx)

        refund_id = deterministic_event_id(*_ids(req.ctx, "payment"), 0)

        async def record_payment() -> None:
            if req.amount_cents == 0:
                return
            # Why look for the event id: after a crash between the two appends the
            # payment already holds this refund; raising it again could exceed the
            # refundable amount and fail the saga after the money went out.
            recorded = await self.store.read_stream(payment_stream(req.order_id))
            if any(e.event_id == refund_id for e in recorded):
                return
            fresh = await self.payments.load(req.order_id)
            try:
                fresh.refund(payment_id, req.amount_cents, f"return {req.return_id}")
            except DomainError as err:
                raise business_failure(err) from err
            await self.payments.save(fresh, metadata=meta, id_prefix=_ids(req.ctx, "payment"))

        async def record_return() -> None:
            fresh = await self.returns.load(req.return_id)
            if fresh.status == "received":
                fresh.refund(payment_id, req.amount_cents)
                await self.returns.save(fresh, metadata=meta, id_prefix=_ids(req.ctx, "return"))

        await on_conflict_retry(record_payment)
        await on_conflict_retry(record_return)
        await self.faults.after_commit("refund_return")
        return req.amount_cents

    @activity.defn(name="notify_return")
    async def notify_return(self, req: NotifyReturn) -> None:
        """Tell the customer, then close the return (ReturnCompleted, once)."""
        await self.notifier.send(
            recipient=req.customer_id,
            subject=f"Return {req.return_id} refunded",
            body=f"We refunded {req.amount_cents / 100:.2f} for your return {req.return_id}.",
            idempotency_key=f"{req.ctx.workflow_id}/{req.ctx.step}",
        )

        async def attempt() -> None:
            ret = await self.returns.load(req.return_id)
            if ret.status == "refunded":
                ret.complete()
                await self.returns.save(
                    ret, metadata=event_metadata(req.ctx), id_prefix=_ids(req.ctx, "return")
                )

        await on_conflict_retry(attempt)


def business_failure_of(ret: Return, command: str) -> ApplicationError:
    """The non-retryable refusal of ``command`` on a return in the wrong state."""
    return ApplicationError(
        f"Return {ret.id} is {ret.status}: cannot {command}",
        type=COMMAND_REFUSED,
        non_retryable=True,
    )


def build_activities(deps: ActivityDeps) -> list[Callable[..., Any]]:
    """Every activity of the returns saga, bound to its dependencies."""
    s = deps.settings
    provider = deps.provider or SimulatedPaymentProvider(
        latency_ms=s.payment_latency_ms,
        decline_rate=s.payment_decline_rate,
        transient_error_rate=s.payment_transient_error_rate,
    )
    acts = ReturnActivities(
        deps.store, provider, deps.notifier, snapshot_every=s.snapshot_every, faults=deps.faults
    )
    return [
        acts.open_return,
        acts.close_return,
        acts.receive_return,
        acts.restock_return,
        acts.unstock_return,
        acts.refund_return,
        acts.notify_return,
    ]
