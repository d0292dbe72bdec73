"""The order saga (workflow id = order id): reserve, charge, create, confirm; then ship
within a deadline and deliver, or compensate.

Built on the engine (``workflows.engine``) as a saga with its own flow: the steps
and their kinds are declared once in ``ORDER``; the journal, status and plan
queries, outcome, cancel and the operator updates come from ``SagaWorkflow``.
Shipping is the pivot: before it a failure or cancel compensates in reverse;
after it stock is sold and the delivery recorded, retried forward, never undone.

Deterministic orchestration only: every effect is an activity (contracts in
``workflows.order_activities``), time is ``workflow.now()`` and durable timers
(``workflow.wait_condition`` with a timeout). Requests from outside are *updates*
with validators: a request in the wrong state is refused by the validator, which
writes nothing to history, and the caller gets the reason at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from workflows import order_activities as acts
from workflows.definition import (
    COMPENSATABLE,
    PIVOT,
    RETRIABLE,
    BusinessKey,
    SagaDefinition,
    Step,
    StepOptions,
    Wait,
)
from workflows.engine import SagaWorkflow
from workflows.models import (
    DELIVER,
    ORDER_SAGA,
    SHIP,
    CancelOrder,
    Charged,
    ChargePayment,
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
    SellStock,
    SendConfirmation,
    ShipOrderInput,
    ShipRequest,
    StepContext,
)
from workflows.saga import SagaAborted, describe_failure, execute

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


def _summary(saga_input: OrderSagaInput) -> str:
    units = sum(line.quantity for line in saga_input.lines)
    lines = len(saga_input.lines)
    return (
        f"order {saga_input.order_id[:8]}: {lines} line{'s' * (lines != 1)}, "
        f"{units} units, customer {saga_input.customer_id}"
    )


ORDER = SagaDefinition(
    name=ORDER_SAGA,
    input=OrderSagaInput,
    result=OrderSagaResult,
    description="Reserve stock, charge, create the order, confirm; ship by a deadline; deliver.",
    steps=(
        Step(
            "reserve",
            COMPENSATABLE,
            acts.reserve_stock,
            acts.release_stock,
            # Releases touch one stream each and commute: safe to run together.
            parallel=True,
            description="reserve each line's units (one step per line: reserve:<sku>)",
        ),
        Step("charge", COMPENSATABLE, acts.charge_payment, acts.refund_payment),
        Step("create_order", COMPENSATABLE, acts.create_order, acts.cancel_order),
        Step("ship", PIVOT, acts.ship_order, description="the goods left: no way back"),
        Step("sell", RETRIABLE, acts.sell_stock, description="sell each reservation"),
        Step("deliver", RETRIABLE, acts.deliver_order),
    ),
    waits=(
        Wait(
            "await_shipment",
            "a durable timer until the ship deadline, or the ship update",
            timer=True,
            advance=SHIP,
            before="ship",
            status=AWAITING_SHIPMENT,
            on_timeout=COMPENSATED,
        ),
        Wait(
            "await_delivery",
            "until the deliver update, or the delivery timeout (it stays shipped)",
            cancellable=False,
            timer=True,
            advance=DELIVER,
            before="deliver",
            status=SHIPPED,
            on_timeout=SHIPPED,
        ),
    ),
    keys=(
        BusinessKey("CustomerId", "keyword", lambda i: i.customer_id),
        BusinessKey("OrderTotal", "float"),
    ),
    summary=_summary,
    saga_id=lambda i: i.order_id,
)
"""The order saga's declaration (registered in ``workflows.registry``)."""


@workflow.defn(name=ORDER_SAGA)
class OrderSagaWorkflow(SagaWorkflow):
    """One order's saga; see the module docstring for the steps."""

    definition = ORDER

    @workflow.init
    def __init__(self, input: OrderSagaInput) -> None:
        self._input = input
        opts = input.options
        self._step = StepOptions(opts.step_retry, opts.start_to_close_s, opts.local_activities)
        # External calls (payment provider, notifications) stay regular activities:
        # they may be slow, and their retries should not hold a workflow task open.
        self._remote = replace(self._step, local=False)
        self._undo = replace(self._step, retry=opts.compensation_retry)
        self._remote_undo = replace(self._undo, local=False)
        # A setting may make it local (SagaOptions.local_notifications): a short call,
        # and its failure never undoes the order; a long retry backoff becomes a timer.
        self._notify = StepOptions(
            opts.notification_retry, opts.start_to_close_s, local=opts.local_notifications
        )
        # Why unlimited: a saga event must never be lost; an event-store outage is
        # waited out rather than turned into a saga failure.
        journal = replace(self._step, retry=RetryKnobs(max_attempts=0))
        self.init_saga(input.order_id, input, order_id=input.order_id, journal_options=journal)
        self._reserved: list[Reserved] = []
        self._charged: Charged | None = None
        self._total = 0
        self._confirmation_sent = False
        self._ship: ShipRequest | None = None
        self._deliver_requested = False
        self._shipping_failure = ""

    # --- the run ------------------------------------------------------------------

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderSagaResult:
        """Run the saga to delivery, or compensate and return why."""
        await self.saga.start()
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
        await self.saga.complete(AWAITING_SHIPMENT)
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

    async def _reserve_stock(self) -> None:
        order_id = self._input.order_id
        # run_step checks for a cancel before each step (see SagaState.check_cancelled).
        for line in self._input.lines:
            step = f"reserve:{line.sku}"
            reserved = await self.saga.run_step(
                step,
                acts.reserve_stock,
                ReserveStock(
                    self._ctx(step),
                    order_id,
                    line.sku,
                    line.quantity,
                    _reservation_id(order_id, line.sku),
                ),
                options=self._step,
                compensation_arg=ReleaseStock(
                    self._ctx(f"release:{line.sku}"), line.sku, _reservation_id(order_id, line.sku)
                ),
                compensation_options=self._undo,
            )
            self._reserved.append(reserved)
        self._total = sum(r.quantity * r.unit_price_cents for r in self._reserved)
        await self.saga.set_key("OrderTotal", self._total / 100)

    async def _charge_payment(self) -> None:
        order_id = self._input.order_id
        self._charged = await self.saga.run_step(
            "charge",
            acts.charge_payment,
            ChargePayment(
                self._ctx("charge"), order_id, self._total, idempotency_key=f"charge-{order_id}"
            ),
            options=self._remote,
            compensation_arg=RefundPayment(self._ctx("refund"), order_id, "order saga compensated"),
            compensation_options=self._remote_undo,
        )

    async def _create_order(self) -> None:
        assert self._charged is not None
        order_id = self._input.order_id
        await self.saga.run_step(
            "create_order",
            acts.create_order,
            CreateOrder(
                self._ctx("create_order"),
                order_id,
                self._input.customer_id,
                [PricedLine(r.sku, r.name, r.quantity, r.unit_price_cents) for r in self._reserved],
                self._charged.payment_id,
                self._charged.amount_cents,
            ),
            options=self._step,
            compensation_arg=CancelOrder(self._ctx("cancel_order"), order_id, "saga compensated"),
            compensation_options=self._undo,
        )
        # The confirmation (a regular activity) is the next command.
        self.saga.check_cancelled(durable_next=not self._notify.local)

    async def _send_confirmation(self) -> None:
        """Confirm through the notification port; a failure never undoes the order."""
        self.saga.current_step = "confirm"
        if not self._notify.local:
            await self.saga.flush_visibility()  # the step in flight, for the UI
        try:
            await execute(
                acts.send_confirmation,
                SendConfirmation(
                    self._ctx("confirm"), self._input.order_id, self._input.customer_id, self._total
                ),
                self._notify,
            )
            self._confirmation_sent = True
        except FailureError as err:
            # The customer paid and the order exists: a lost e-mail is no reason to
            # refund. Keep the failure visible in the query instead.
            self.saga.failure = f"confirmation not sent: {describe_failure(err)}"
            workflow.logger.warning("order %s: %s", self._input.order_id, self.saga.failure)

    # --- after the saga: shipping (the pivot) and delivery ----------------------------

    async def _await_fulfilment(self) -> OrderSagaResult:
        order_id = self._input.order_id
        opts = self._input.options
        deadline = workflow.now() + timedelta(seconds=opts.ship_deadline_s)
        saga = self.saga
        while True:
            saga.status = AWAITING_SHIPMENT
            remaining = (deadline - workflow.now()).total_seconds()
            try:
                # A durable timer: survives worker restarts; time-skips in tests.
                await workflow.wait_condition(
                    lambda: self._ship is not None or saga.cancel_reason is not None,
                    timeout=timedelta(seconds=max(remaining, 0.001)),
                )
            except TimeoutError:
                return await self._compensate("ship deadline passed")
            if saga.cancel_reason is not None:
                return await self._compensate(f"cancelled: {saga.cancel_reason}")
            if await self._ship_order():
                break
        try:
            await workflow.wait_condition(
                lambda: self._deliver_requested,
                timeout=timedelta(seconds=opts.delivery_timeout_s),
            )
        except TimeoutError:
            return OrderSagaResult(order_id, SHIPPED, reason="delivery not confirmed in time")
        await saga.run_step(
            "deliver",
            acts.deliver_order,
            DeliverOrderInput(self._ctx("deliver"), order_id),
            options=self._step,
        )
        await saga.set_status(DELIVERED)
        return OrderSagaResult(order_id, DELIVERED)

    async def _ship_order(self) -> bool:
        assert self._ship is not None
        saga = self.saga
        await saga.set_status(SHIPPING, record=False)
        order_id = self._input.order_id
        try:
            await saga.run_step(
                "ship",
                acts.ship_order,
                ShipOrderInput(
                    self._ctx("ship"), order_id, self._ship.tracking_number, self._ship.carrier
                ),
                options=self._step,
            )
        except FailureError as err:
            # The pivot did not commit: the order waits for another ship request.
            self._shipping_failure = saga.failure = f"shipping failed: {describe_failure(err)}"
            self._ship = None
            return False
        if not saga.engine_features:
            # Pre-engine runs answered the ship update before the sales: replay them so.
            saga.status = SHIPPED
        # Why after the order shipped: stock is sold only once the goods left, so
        # available + reserved + sold == stocked holds at every moment.
        for r in self._reserved:
            await saga.run_step(
                f"sell:{r.sku}",
                acts.sell_stock,
                SellStock(self._ctx(f"sell:{r.sku}"), r.sku, r.reservation_id),
                options=self._step,
            )
        # Why "shipped" only now: the ship update answers once everything the pivot
        # implies (the sales) is recorded, so a caller never sees half a shipment.
        await saga.set_status(SHIPPED)
        return True

    async def _compensate(self, reason: str) -> OrderSagaResult:
        undone = await self.saga.compensate(reason)
        return OrderSagaResult(self._input.order_id, COMPENSATED, reason, undone)

    def _reason(self, err: BaseException) -> str:
        if isinstance(err, SagaAborted):
            return str(err)
        return f"step {self.saga.current_step} failed: {describe_failure(err)}"

    # --- the engine's hooks --------------------------------------------------------

    def cancellable(self) -> bool:
        """Before shipping: while running or awaiting shipment."""
        return self.saga.current_status in _CANCELLABLE and not self.saga.pivot_committed

    def noun(self) -> str:
        """Refusals name the order."""
        return f"Order {self._input.order_id}"

    def status_extras(self) -> dict[str, Any]:
        """The order's total, shipment and confirmation."""
        return {
            "total_cents": self._total,
            "tracking_number": self._ship.tracking_number if self._ship else "",
            "carrier": self._ship.carrier if self._ship else "",
            "confirmation_sent": self._confirmation_sent,
        }

    # --- the order's own updates ---------------------------------------------------

    @workflow.update(name=SHIP)
    async def ship(self, request: ShipRequest) -> str:
        """Ship the confirmed order; returns the new status once recorded."""
        self._ship = request
        self.saga.note_input()
        # Done when shipped, or when the main loop gave the request back (_ship reset).
        await workflow.wait_condition(
            lambda: self.saga.status in (SHIPPED, DELIVERED) or self._ship is None
        )
        if self.saga.status not in (SHIPPED, DELIVERED):
            raise ApplicationError(
                self._shipping_failure or "shipping failed", type="ShippingFailed"
            )
        return self.saga.status

    @ship.validator
    def _validate_ship(self, request: ShipRequest) -> None:
        if not request.tracking_number.strip() or not request.carrier.strip():
            raise ValueError("tracking_number and carrier must not be empty")
        if (
            self.saga.current_status != AWAITING_SHIPMENT
            or self._ship is not None
            or self.saga.cancel_reason
        ):
            self.refuse("ship")

    @workflow.update(name=DELIVER)
    async def deliver(self) -> str:
        """Confirm delivery of the shipped order."""
        self._deliver_requested = True
        self.saga.note_input()
        await workflow.wait_condition(lambda: self.saga.status == DELIVERED)
        return self.saga.status

    @deliver.validator
    def _validate_deliver(self) -> None:
        if self.saga.current_status != SHIPPED or self._deliver_requested:
            self.refuse("deliver")


def _reservation_id(order_id: str, sku: str) -> str:
    """The reservation id of one line: derived from the saga, so a retry finds it."""
    return f"{order_id}/{sku}"
