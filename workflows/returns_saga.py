"""The returns saga (workflow id = return id): open a return for a delivered order,
wait for the goods until a deadline, restock, refund (the pivot), notify.

Built on the engine as a saga with its own flow: the steps and kinds are declared
once in ``RETURNS``; journal, status/plan queries, outcome, cancel and operator
updates come from ``SagaWorkflow``. Before the refund a failure, a cancel or the
receive deadline compensates in reverse (restocked units out again, the return
cancelled and its units released on the order); after it the saga only goes forward.

Deterministic orchestration only: effects are activities (contracts in
``workflows.returns_activities``); the deadline is a durable timer
(``workflow.wait_condition`` with a timeout) and all knobs come in the input.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError

from workflows import returns_activities as acts
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
from workflows.models import RetryKnobs, StepContext
from workflows.returns_models import (
    RECEIVE,
    RETURN_SAGA,
    CloseReturn,
    NotifyReturn,
    OpenReturn,
    ReceiveRequest,
    ReceiveReturn,
    RefundReturn,
    RestockReturn,
    ReturnOpenedResult,
    ReturnSagaInput,
    ReturnSagaResult,
)
from workflows.saga import SagaAborted, describe_failure, execute

# Saga statuses of the flow (the engine adds compensating / compensated / parked).
RUNNING = "running"
AWAITING_GOODS = "awaiting_goods"
RECEIVED = "received"
REFUNDED = "refunded"
COMPLETED = "completed"
COMPENSATED = "compensated"
EXPIRED = "expired"

_CANCELLABLE = (RUNNING, AWAITING_GOODS, RECEIVED)


def _summary(saga_input: ReturnSagaInput) -> str:
    units = sum(line.quantity for line in saga_input.lines)
    return (
        f"return {saga_input.return_id[:8]} of order {saga_input.order_id[:8]}: "
        f"{units} unit{'s' * (units != 1)}, customer {saga_input.customer_id}"
    )


RETURNS = SagaDefinition(
    name=RETURN_SAGA,
    input=ReturnSagaInput,
    result=ReturnSagaResult,
    description="Open a return, wait for the goods by a deadline, restock, refund, notify.",
    steps=(
        Step(
            "open_return",
            COMPENSATABLE,
            acts.open_return,
            acts.close_return,
            description="claim the units on the order and open the return",
        ),
        Step(
            "restock",
            COMPENSATABLE,
            acts.restock_return,
            acts.unstock_return,
            # Reversals touch one inventory stream each and commute.
            parallel=True,
            description="put each line's units back in stock (restock:<sku>)",
        ),
        Step("refund", PIVOT, acts.refund_return, description="the money went back: no way back"),
        Step("notify", RETRIABLE, acts.notify_return, description="tell the customer, close"),
    ),
    waits=(
        Wait(
            "await_goods",
            "a durable timer until the receive deadline (then the return expires), "
            "or the receive update",
            timer=True,
            advance=RECEIVE,
            before="restock",
            status=AWAITING_GOODS,
            on_timeout=EXPIRED,
        ),
    ),
    keys=(
        BusinessKey("OrderId", "keyword", lambda i: i.order_id),
        BusinessKey("CustomerId", "keyword", lambda i: i.customer_id),
        BusinessKey("ReturnTotal", "float"),
    ),
    summary=_summary,
    saga_id=lambda i: i.return_id,
)
"""The returns saga's declaration (registered in ``workflows.registry``)."""


@workflow.defn(name=RETURN_SAGA)
class ReturnSagaWorkflow(SagaWorkflow):
    """One return's saga; see the module docstring for the steps."""

    definition = RETURNS

    @workflow.init
    def __init__(self, input: ReturnSagaInput) -> None:
        self._input = input
        opts = input.options
        self._step = StepOptions(opts.step_retry, opts.start_to_close_s, opts.local_activities)
        self._undo = replace(self._step, retry=opts.compensation_retry)
        # The provider and the notifier are external calls: regular activities, so
        # their retries do not hold a workflow task open.
        self._refund = StepOptions(opts.refund_retry, opts.start_to_close_s, local=False)
        self._notify = StepOptions(opts.notification_retry, opts.start_to_close_s, local=False)
        journal = replace(self._step, retry=RetryKnobs(max_attempts=0))
        self.init_saga(input.return_id, input, journal_options=journal)
        self._opened: ReturnOpenedResult | None = None
        self._receive: ReceiveRequest | None = None
        self._refunded = 0

    @workflow.run
    async def run(self, input: ReturnSagaInput) -> ReturnSagaResult:
        """Run the return to completion, or compensate and say why."""
        saga = self.saga
        await saga.start()
        try:
            await self._open_return()
            if not await self._await_goods():
                await self._close(expired=True)
                return await self._compensate("receive deadline passed", EXPIRED)
            await self._restock()
            await self._refund_return()
        except (FailureError, SagaAborted) as err:
            return await self._compensate(self._reason(err))
        except asyncio.CancelledError:
            # Why: CancelledError is not an Exception; a cancelled workflow still
            # undoes what it did (unless the refund committed) before ending.
            if not saga.pivot_committed:
                await saga.compensate("workflow cancelled")
            raise
        await saga.set_status(REFUNDED, record=False)
        await self._notify_customer()
        await saga.complete(COMPLETED)
        return ReturnSagaResult(input.return_id, COMPLETED, refunded_cents=self._refunded)

    def _ctx(self, step: str) -> StepContext:
        return StepContext(
            workflow_id=workflow.info().workflow_id,
            step=step,
            customer_id=self._input.customer_id,
            user_id=self._input.user_id,
        )

    async def _open_return(self) -> None:
        i = self._input
        self._opened = await self.saga.run_step(
            "open_return",
            acts.open_return,
            OpenReturn(
                self._ctx("open_return"), i.return_id, i.order_id, i.customer_id, i.reason, i.lines
            ),
            options=self._step,
            compensation_arg=CloseReturn(
                self._ctx("close_return"), i.return_id, i.order_id, "return saga compensated"
            ),
            compensation_options=self._undo,
        )
        assert self._opened is not None
        await self.saga.set_key("ReturnTotal", self._opened.total_cents / 100)

    async def _await_goods(self) -> bool:
        """Wait for ``receive`` until the deadline; False when it passed."""
        saga = self.saga
        await saga.set_status(AWAITING_GOODS)
        try:
            # A durable timer: survives worker restarts; time-skips in tests.
            await workflow.wait_condition(
                lambda: self._receive is not None or saga.cancel_reason is not None,
                timeout=timedelta(seconds=max(self._input.options.receive_deadline_s, 0.001)),
            )
        except TimeoutError:
            return False
        saga.check_cancelled(durable_next=not self._step.local)
        await execute(
            acts.receive_return,
            ReceiveReturn(self._ctx("receive"), self._input.return_id),
            self._step,
        )
        # Why the status after the receipt is recorded: the receive update answers
        # once ReturnReceived is in the store, so a reader sees the receipt.
        await saga.set_status(RECEIVED)
        return True

    async def _close(self, *, expired: bool) -> None:
        i = self._input
        # Why before compensating: the expiry is a fact of the return; the open's
        # compensation then only releases the units (it leaves an expired return be).
        await execute(
            acts.close_return,
            CloseReturn(
                self._ctx("expire_return"),
                i.return_id,
                i.order_id,
                "receive deadline passed",
                expired=expired,
            ),
            self._undo,
        )

    async def _restock(self) -> None:
        i = self._input
        # run_step checks for a cancel before each step (see SagaState.check_cancelled).
        for line in i.lines:
            step = f"restock:{line.sku}"
            await self.saga.run_step(
                step,
                acts.restock_return,
                RestockReturn(self._ctx(step), i.return_id, i.order_id, line.sku, line.quantity),
                options=self._step,
                compensation_arg=RestockReturn(
                    self._ctx(f"unstock:{line.sku}"),
                    i.return_id,
                    i.order_id,
                    line.sku,
                    line.quantity,
                ),
                compensation_options=self._undo,
            )

    async def _refund_return(self) -> None:
        assert self._opened is not None
        i = self._input
        self._refunded = await self.saga.run_step(
            "refund",
            acts.refund_return,
            RefundReturn(self._ctx("refund"), i.return_id, i.order_id, self._opened.total_cents),
            options=self._refund,
        )

    async def _notify_customer(self) -> None:
        i = self._input
        # Retriable: the engine retries it and parks it for an operator; the refund
        # is never undone for a lost message.
        await self.saga.run_step(
            "notify",
            acts.notify_return,
            NotifyReturn(self._ctx("notify"), i.return_id, i.customer_id, self._refunded),
            options=self._notify,
        )

    async def _compensate(self, reason: str, status: str = COMPENSATED) -> ReturnSagaResult:
        undone = await self.saga.compensate(reason)
        return ReturnSagaResult(self._input.return_id, status, reason, 0, undone)

    def _reason(self, err: BaseException) -> str:
        if isinstance(err, SagaAborted):
            return str(err)
        return f"step {self.saga.current_step} failed: {describe_failure(err)}"

    # --- the engine's hooks --------------------------------------------------------

    def cancellable(self) -> bool:
        """Before the refund."""
        return self.saga.current_status in _CANCELLABLE and not self.saga.pivot_committed

    def noun(self) -> str:
        """Refusals name the return."""
        return f"Return {self._input.return_id}"

    def status_extras(self) -> dict[str, Any]:
        """The return's total."""
        return {"total_cents": self._opened.total_cents if self._opened else 0}

    # --- the return's own update ---------------------------------------------------

    @workflow.update(name=RECEIVE)
    async def receive(self, request: ReceiveRequest) -> str:
        """The goods arrived; returns the status once the receipt is recorded."""
        self._receive = request
        self.saga.note_input()
        await workflow.wait_condition(lambda: self.saga.current_status != AWAITING_GOODS)
        return self.saga.current_status

    @receive.validator
    def _validate_receive(self, request: ReceiveRequest) -> None:
        if (
            self.saga.current_status != AWAITING_GOODS
            or self._receive is not None
            or self.saga.cancel_reason is not None
        ):
            self.refuse("receive")
