"""The order saga (workflow id = order id): reserve, charge, create, confirm; then ship
within a deadline and deliver, or compensate.

Deterministic orchestration only: every effect is an activity (``activities/``),
time is ``workflow.now()`` and durable timers (``workflow.wait_condition`` with a
timeout). Requests from outside are *updates* with validators: a request in the
wrong state is refused by the validator, which writes nothing to history, and the
caller gets the reason at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from workflows.models import (
    CANCEL,
    DELIVER,
    ORDER_SAGA,
    OUTCOME,
    RESOLVE_COMPENSATION,
    RETRY_COMPENSATION,
    SHIP,
    STATUS_QUERY,
    CancelOrder,
    CancelRequest,
    Charged,
    ChargePayment,
    CompensationDecision,
    CreateOrder,
    DeliverOrderInput,
    OrderSagaInput,
    OrderSagaResult,
    PricedLine,
    RefundPayment,
    ReleaseStock,
    Reserved,
    ReserveStock,
    RetryKnobs,
    SagaRecord,
    SagaStatus,
    SellStock,
    SendConfirmation,
    ShipOrderInput,
    ShipRequest,
    StepContext,
)
from workflows.saga import DONE, PARKED, RESOLVED, Saga, StepOptions, describe_failure, execute

with workflow.unsafe.imports_passed_through():
    # Why passed through: activity classes import the event store and psycopg; the
    # workflow only needs their method references, not a sandboxed copy of them.
    from activities.inventory import InventoryActivities
    from activities.notification import NotificationActivities
    from activities.order import OrderActivities
    from activities.payment import PaymentActivities
    from activities.saga_journal import SagaJournalActivities

# Saga statuses shown by the query.
RUNNING = "running"
AWAITING_SHIPMENT = "awaiting_shipment"
SHIPPING = "shipping"
SHIPPED = "shipped"
DELIVERED = "delivered"
COMPENSATING = "compensating"
COMPENSATION_PARKED = "compensation_parked"
COMPENSATED = "compensated"

_CANCELLABLE = (RUNNING, AWAITING_SHIPMENT)


class SagaAborted(Exception):
    """Raised inside the workflow to leave the forward path and compensate."""


@workflow.defn(name=ORDER_SAGA)
class OrderSagaWorkflow:
    """One order's saga; see the module docstring for the steps."""

    @workflow.init
    def __init__(self, input: OrderSagaInput) -> None:
        self._input = input
        self._saga = Saga(
            input.order_id, ORDER_SAGA, journal=self._journal, order_id=input.order_id
        )
        self._status = RUNNING
        self._failure = ""
        self._reserved: list[Reserved] = []
        self._charged: Charged | None = None
        self._total = 0
        self._confirmation_sent = False
        self._ship: ShipRequest | None = None
        self._deliver_requested = False
        self._cancel: CancelRequest | None = None
        opts = input.options
        self._step = StepOptions(opts.step_retry, opts.start_to_close_s, opts.local_activities)
        # External calls (payment provider, notifications) stay regular activities:
        # they may be slow, and their retries should not hold a workflow task open.
        self._remote = replace(self._step, local=False)
        self._undo = replace(self._step, retry=opts.compensation_retry)
        self._remote_undo = replace(self._undo, local=False)
        self._notify = StepOptions(opts.notification_retry, opts.start_to_close_s, local=False)
        # Why unlimited: a saga event must never be lost; an event-store outage is
        # waited out rather than turned into a saga failure.
        self._journal_opts = replace(self._step, retry=RetryKnobs(max_attempts=0))

    # --- the run ------------------------------------------------------------------

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderSagaResult:
        """Run the saga to delivery, or compensate and return why."""
        await self._saga.start()
        try:
            await self._run_steps()
        except (FailureError, SagaAborted) as err:
            return await self._compensate(self._reason(err))
        except asyncio.CancelledError:
            # Why: CancelledError is not an Exception; a cancelled workflow still
            # undoes what it did before ending as cancelled.
            await self._compensate("workflow cancelled")
            raise
        await self._send_confirmation()
        await self._saga.complete()
        return await self._await_fulfilment()

    async def _run_steps(self) -> None:
        """The forward steps, in order (a test swaps two to prove replay catches it)."""
        await self._reserve_stock()
        await self._charge_payment()
        await self._create_order()

    def _ctx(self, step: str) -> StepContext:
        return StepContext(
            workflow_id=workflow.info().workflow_id,
            step=step,
            customer_id=self._input.customer_id,
            user_id=self._input.user_id,
        )

    def _check_cancelled(self) -> None:
        if self._cancel is not None:
            raise SagaAborted(f"cancelled: {self._cancel.reason}")

    async def _reserve_stock(self) -> None:
        order_id = self._input.order_id
        for line in self._input.lines:
            self._check_cancelled()
            step = f"reserve:{line.sku}"
            reserved = await self._saga.run_step(
                step,
                InventoryActivities.reserve_stock,
                ReserveStock(
                    self._ctx(step),
                    order_id,
                    line.sku,
                    line.quantity,
                    _reservation_id(order_id, line.sku),
                ),
                options=self._step,
                compensation=InventoryActivities.release_stock,
                compensation_arg=ReleaseStock(
                    self._ctx(f"release:{line.sku}"), line.sku, _reservation_id(order_id, line.sku)
                ),
                compensation_options=self._undo,
                # Releases touch one stream each and commute: safe to run together.
                parallel=True,
            )
            self._reserved.append(reserved)
        self._total = sum(r.quantity * r.unit_price_cents for r in self._reserved)

    async def _charge_payment(self) -> None:
        self._check_cancelled()
        order_id = self._input.order_id
        self._charged = await self._saga.run_step(
            "charge",
            PaymentActivities.charge_payment,
            ChargePayment(
                self._ctx("charge"), order_id, self._total, idempotency_key=f"charge-{order_id}"
            ),
            options=self._remote,
            compensation=PaymentActivities.refund_payment,
            compensation_arg=RefundPayment(self._ctx("refund"), order_id, "order saga compensated"),
            compensation_options=self._remote_undo,
        )

    async def _create_order(self) -> None:
        self._check_cancelled()
        assert self._charged is not None
        order_id = self._input.order_id
        await self._saga.run_step(
            "create_order",
            OrderActivities.create_order,
            CreateOrder(
                self._ctx("create_order"),
                order_id,
                self._input.customer_id,
                [PricedLine(r.sku, r.name, r.quantity, r.unit_price_cents) for r in self._reserved],
                self._charged.payment_id,
                self._charged.amount_cents,
            ),
            options=self._step,
            compensation=OrderActivities.cancel_order,
            compensation_arg=CancelOrder(self._ctx("cancel_order"), order_id, "saga compensated"),
            compensation_options=self._undo,
        )
        self._check_cancelled()

    async def _send_confirmation(self) -> None:
        """Confirm through the notification port; a failure never undoes the order."""
        self._saga.current_step = "confirm"
        try:
            await execute(
                NotificationActivities.send_confirmation,
                SendConfirmation(
                    self._ctx("confirm"), self._input.order_id, self._input.customer_id, self._total
                ),
                self._notify,
            )
            self._confirmation_sent = True
        except FailureError as err:
            # The customer paid and the order exists: a lost e-mail is no reason to
            # refund. Keep the failure visible in the query instead.
            self._failure = f"confirmation not sent: {describe_failure(err)}"
            workflow.logger.warning("order %s: %s", self._input.order_id, self._failure)

    # --- after the saga: shipping and delivery ------------------------------------

    async def _await_fulfilment(self) -> OrderSagaResult:
        order_id = self._input.order_id
        opts = self._input.options
        deadline = workflow.now() + timedelta(seconds=opts.ship_deadline_s)
        while True:
            self._status = AWAITING_SHIPMENT
            remaining = (deadline - workflow.now()).total_seconds()
            try:
                # A durable timer: survives worker restarts; time-skips in tests.
                await workflow.wait_condition(
                    lambda: self._ship is not None or self._cancel is not None,
                    timeout=timedelta(seconds=max(remaining, 0.001)),
                )
            except TimeoutError:
                return await self._compensate("ship deadline passed")
            if self._cancel is not None:
                return await self._compensate(f"cancelled: {self._cancel.reason}")
            if await self._ship_order():
                break
        try:
            await workflow.wait_condition(
                lambda: self._deliver_requested,
                timeout=timedelta(seconds=opts.delivery_timeout_s),
            )
        except TimeoutError:
            return OrderSagaResult(order_id, SHIPPED, reason="delivery not confirmed in time")
        await execute(
            OrderActivities.deliver_order,
            DeliverOrderInput(self._ctx("deliver"), order_id),
            self._step,
        )
        self._status = DELIVERED
        return OrderSagaResult(order_id, DELIVERED)

    async def _ship_order(self) -> bool:
        assert self._ship is not None
        self._status = SHIPPING
        order_id = self._input.order_id
        try:
            await execute(
                OrderActivities.ship_order,
                ShipOrderInput(
                    self._ctx("ship"), order_id, self._ship.tracking_number, self._ship.carrier
                ),
                self._step,
            )
        except FailureError as err:
            self._failure = f"shipping failed: {describe_failure(err)}"
            self._ship = None
            return False
        self._status = SHIPPED
        # Why after the order shipped: stock is sold only once the goods left, so
        # available + reserved + sold == stocked holds at every moment.
        for r in self._reserved:
            await execute(
                InventoryActivities.sell_stock,
                SellStock(self._ctx(f"sell:{r.sku}"), r.sku, r.reservation_id),
                self._step,
            )
        return True

    async def _compensate(self, reason: str) -> OrderSagaResult:
        self._status = COMPENSATING
        self._failure = reason
        undone = await self._saga.compensate(reason)
        self._status = COMPENSATED
        return OrderSagaResult(self._input.order_id, COMPENSATED, reason, undone)

    def _reason(self, err: BaseException) -> str:
        if isinstance(err, SagaAborted):
            return str(err)
        return f"step {self._saga.current_step} failed: {describe_failure(err)}"

    async def _journal(self, records: list[SagaRecord]) -> None:
        await execute(SagaJournalActivities.record_saga_events, records, self._journal_opts)

    # --- updates (validated requests) and the query -------------------------------

    @workflow.update(name=OUTCOME)
    async def outcome(self) -> str:
        """Wait until the saga proper has an outcome: confirmed or compensated.

        No validator: asking is always allowed. Lets a caller place an order and
        learn the result in one round trip (update-with-start) instead of polling.
        """
        await workflow.wait_condition(lambda: self._current_status() not in (RUNNING, COMPENSATING))
        return self._current_status()

    @workflow.update(name=SHIP)
    async def ship(self, request: ShipRequest) -> str:
        """Ship the confirmed order; returns the new status once recorded."""
        self._ship = request
        # Done when shipped, or when the main loop gave the request back (_ship reset).
        await workflow.wait_condition(
            lambda: self._status in (SHIPPED, DELIVERED) or self._ship is None
        )
        if self._status not in (SHIPPED, DELIVERED):
            raise ApplicationError(self._failure or "shipping failed", type="ShippingFailed")
        return self._status

    @ship.validator
    def _validate_ship(self, request: ShipRequest) -> None:
        if not request.tracking_number.strip() or not request.carrier.strip():
            raise ValueError("tracking_number and carrier must not be empty")
        if self._status != AWAITING_SHIPMENT or self._ship is not None or self._cancel:
            self._refuse("ship")

    @workflow.update(name=DELIVER)
    async def deliver(self) -> str:
        """Confirm delivery of the shipped order."""
        self._deliver_requested = True
        await workflow.wait_condition(lambda: self._status == DELIVERED)
        return self._status

    @deliver.validator
    def _validate_deliver(self) -> None:
        if self._status != SHIPPED or self._deliver_requested:
            self._refuse("deliver")

    @workflow.update(name=CANCEL)
    async def cancel(self, request: CancelRequest) -> str:
        """Cancel before shipping: everything done so far is compensated."""
        self._cancel = request
        await workflow.wait_condition(
            lambda: self._current_status() in (COMPENSATED, COMPENSATION_PARKED)
        )
        return self._current_status()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if not request.reason.strip():
            raise ValueError("reason must not be empty")
        if self._status not in _CANCELLABLE or self._cancel is not None:
            self._refuse("cancel")

    @workflow.update(name=RETRY_COMPENSATION)
    async def retry_compensation(self, decision: CompensationDecision) -> str:
        """Retry a parked compensation; returns its status after the attempt."""
        entry = self._saga.decide(decision.step, "retry", decision.note)
        await workflow.wait_condition(lambda: entry.status in (DONE, PARKED, RESOLVED))
        return entry.status

    @retry_compensation.validator
    def _validate_retry(self, decision: CompensationDecision) -> None:
        self._saga.check_parked(decision.step)

    @workflow.update(name=RESOLVE_COMPENSATION)
    async def resolve_compensation(self, decision: CompensationDecision) -> str:
        """Mark a parked compensation as done by hand (the note says what was done)."""
        entry = self._saga.decide(decision.step, "resolve", decision.note)
        await workflow.wait_condition(lambda: entry.status == RESOLVED)
        return entry.status

    @resolve_compensation.validator
    def _validate_resolve(self, decision: CompensationDecision) -> None:
        self._saga.check_parked(decision.step)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> SagaStatus:
        """Current step, status and the compensation log."""
        return SagaStatus(
            saga_id=self._input.order_id,
            status=self._current_status(),
            current_step=self._saga.current_step,
            completed_steps=list(self._saga.completed_steps),
            compensation_log=list(self._saga.compensation_log),
            failure=self._failure,
            total_cents=self._total,
            tracking_number=self._ship.tracking_number if self._ship else "",
            carrier=self._ship.carrier if self._ship else "",
            confirmation_sent=self._confirmation_sent,
        )

    def _current_status(self) -> str:
        return COMPENSATION_PARKED if self._saga.parked_steps else self._status

    def _refuse(self, command: str) -> None:
        status = self._current_status()
        if self._cancel is not None and status in _CANCELLABLE:
            status = "being cancelled"
        raise ApplicationError(
            f"Order {self._input.order_id} is {status}: cannot {command}",
            type="WrongState",
            non_retryable=True,
        )


def _reservation_id(order_id: str, sku: str) -> str:
    """The reservation id of one line: derived from the saga, so a retry finds it."""
    return f"{order_id}/{sku}"
