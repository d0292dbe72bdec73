"""The saga machinery with mock activities registered under the real activity names.

Runs the real OrderSagaWorkflow (and a tiny generic saga) on the time-skipping test
server; no database: the mocks record what was called, in order.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows.definition import COMPENSATABLE, SagaDefinition, Step, StepOptions
from workflows.engine import linear_saga
from workflows.models import (
    CancelOrder,
    CancelRequest,
    Charged,
    ChargePayment,
    CompensationDecision,
    CreateOrder,
    DeliverOrderInput,
    LineInput,
    OrderSagaInput,
    RefundPayment,
    ReleaseStock,
    Reserved,
    ReserveStock,
    RetryKnobs,
    SagaOptions,
    SagaRecord,
    SagaResult,
    SellStock,
    SendConfirmation,
    ShipOrderInput,
)
from workflows.order_saga import OrderSagaWorkflow


@pytest.fixture
def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The session's time-skipping test server (tests/conftest.py)."""
    return time_skipping_env


@dataclass
class Fakes:
    """Mock activities under the real names; ``calls`` is the order they ran in."""

    calls: list[str] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)
    out_of_stock: set[str] = field(default_factory=set)
    decline: bool = False
    reserve_flaky: int = 0
    refund_broken: bool = False
    notify_broken: bool = False
    charge_attempts: int = 0

    def activities(self) -> list[Any]:
        @activity.defn(name="reserve_stock")
        async def reserve_stock(req: ReserveStock) -> Reserved:
            self.calls.append(f"reserve:{req.sku}")
            if self.reserve_flaky:
                self.reserve_flaky -= 1
                raise RuntimeError("database hiccup")
            if req.sku in self.out_of_stock:
                raise ApplicationError("no stock", type="OutOfStock", non_retryable=True)
            return Reserved(req.reservation_id, req.sku, req.sku, req.quantity, 100)

        @activity.defn(name="release_stock")
        async def release_stock(req: ReleaseStock) -> bool:
            self.calls.append(f"release:{req.sku}")
            return True

        @activity.defn(name="sell_stock")
        async def sell_stock(req: SellStock) -> bool:
            self.calls.append(f"sell:{req.sku}")
            return True

        @activity.defn(name="charge_payment")
        async def charge_payment(req: ChargePayment) -> Charged:
            self.calls.append("charge")
            self.charge_attempts += 1
            if self.decline:
                raise ApplicationError("declined", type="PaymentDeclined", non_retryable=True)
            return Charged("pay-1", req.amount_cents)

        @activity.defn(name="refund_payment")
        async def refund_payment(req: RefundPayment) -> int:
            self.calls.append("refund")
            if self.refund_broken:
                raise RuntimeError("provider down")
            return 1

        @activity.defn(name="create_order")
        async def create_order(req: CreateOrder) -> str:
            self.calls.append("create_order")
            return "paid"

        @activity.defn(name="cancel_order")
        async def cancel_order(req: CancelOrder) -> str:
            self.calls.append("cancel_order")
            return "cancelled"

        @activity.defn(name="ship_order")
        async def ship_order(req: ShipOrderInput) -> str:
            self.calls.append("ship")
            return "shipped"

        @activity.defn(name="deliver_order")
        async def deliver_order(req: DeliverOrderInput) -> str:
            self.calls.append("deliver")
            return "delivered"

        @activity.defn(name="send_confirmation")
        async def send_confirmation(req: SendConfirmation) -> None:
            self.calls.append("confirm")
            if self.notify_broken:
                raise RuntimeError("smtp down")

        @activity.defn(name="record_saga_events")
        async def record_saga_events(records: list[SagaRecord]) -> None:
            for record in records:
                self.journal.append(record.kind + (f":{record.step}" if record.step else ""))

        return [
            reserve_stock, release_stock, sell_stock, charge_payment, refund_payment,
            create_order, cancel_order, ship_order, deliver_order, send_confirmation,
            record_saga_events,
        ]  # fmt: skip


FAST = RetryKnobs(initial_interval_s=0.01, backoff=1.0, max_interval_s=0.01, max_attempts=3)
OPTIONS = SagaOptions(
    ship_deadline_s=86400,
    step_retry=FAST,
    compensation_retry=RetryKnobs(0.01, 1.0, 0.01, 2),
    notification_retry=RetryKnobs(0.01, 1.0, 0.01, 2),
)


def order_input(*skus: str) -> OrderSagaInput:
    return OrderSagaInput(
        order_id=f"o-{uuid.uuid4().hex[:8]}",
        customer_id="c",
        lines=[LineInput(sku, 1) for sku in skus],
        options=OPTIONS,
    )


def worker(env: WorkflowEnvironment, fakes: Fakes, queue: str, *workflows: type) -> Worker:
    return Worker(
        env.client,
        task_queue=queue,
        workflows=list(workflows) or [OrderSagaWorkflow],
        activities=fakes.activities(),
    )


async def run_saga(env: WorkflowEnvironment, fakes: Fakes, *skus: str) -> Any:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    inp = order_input(*skus)
    async with worker(env, fakes, queue):
        return await env.client.execute_workflow(
            OrderSagaWorkflow.run, inp, id=inp.order_id, task_queue=queue
        )


async def test_steps_run_in_order_and_the_saga_completes_before_waiting_to_ship(
    env: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    result = await run_saga(env, fakes, "A", "B")
    # Nobody ships within the (skipped) day: the deadline compensates everything.
    assert fakes.calls[:5] == ["reserve:A", "reserve:B", "charge", "create_order", "confirm"]
    assert fakes.journal[:6] == [
        "SagaStarted", "SagaStepCompleted:reserve:A", "SagaStepCompleted:reserve:B",
        "SagaStepCompleted:charge", "SagaStepCompleted:create_order", "SagaCompleted",
    ]  # fmt: skip
    assert result.reason == "ship deadline passed"


async def test_business_failure_is_not_retried_and_compensates_in_reverse_at_once(
    env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(decline=True)
    result = await run_saga(env, fakes, "A", "B")
    assert fakes.charge_attempts == 1
    assert fakes.calls[:3] == ["reserve:A", "reserve:B", "charge"]
    # The charge's own compensation first, then the releases (declared parallel-safe).
    assert fakes.calls[3] == "refund"
    assert sorted(fakes.calls[4:]) == ["release:A", "release:B"]
    assert result.compensated_steps == ["charge", "reserve:B", "reserve:A"]
    assert fakes.journal[-1] == "SagaCompensated"


async def test_technical_failure_is_retried_under_the_step_policy(
    env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(reserve_flaky=2)
    await run_saga(env, fakes, "A")
    assert fakes.calls[:4] == ["reserve:A", "reserve:A", "reserve:A", "charge"]


async def test_failed_notification_never_triggers_a_refund(env: WorkflowEnvironment) -> None:
    fakes = Fakes(notify_broken=True)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    inp = order_input("A")
    async with worker(env, fakes, queue):
        handle = await env.client.start_workflow(
            OrderSagaWorkflow.run, inp, id=inp.order_id, task_queue=queue
        )
        status = await _wait_status(handle, "awaiting_shipment")
        assert not status.confirmation_sent
        assert status.failure.startswith("confirmation not sent")
        _ = await handle.execute_update(OrderSagaWorkflow.ship, _ship())
        _ = await handle.execute_update(OrderSagaWorkflow.deliver)
        result = await handle.result()
    assert result.status == "delivered"
    assert "refund" not in fakes.calls
    assert fakes.calls.count("confirm") == 2


async def test_failed_compensation_is_parked_and_resolved_by_hand(
    env: WorkflowEnvironment,
) -> None:
    fakes = Fakes(refund_broken=True, out_of_stock=set())
    queue = f"q-{uuid.uuid4().hex[:8]}"
    inp = order_input("A")
    async with worker(env, fakes, queue):
        handle = await env.client.start_workflow(
            OrderSagaWorkflow.run, inp, id=inp.order_id, task_queue=queue
        )
        await _wait_status(handle, "awaiting_shipment")
        assert (
            await handle.execute_update(OrderSagaWorkflow.cancel, CancelRequest("changed mind"))
            == "compensation_parked"
        )
        status = await handle.query(OrderSagaWorkflow.status)
        assert [(c.step, c.status) for c in status.compensation_log] == [
            ("reserve:A", "pending"),
            ("charge", "parked"),
            ("create_order", "done"),
        ]
        with pytest.raises(WorkflowUpdateFailedError):
            _ = await handle.execute_update(
                OrderSagaWorkflow.resolve_compensation, CompensationDecision("reserve:A")
            )
        resolved = await handle.execute_update(
            OrderSagaWorkflow.resolve_compensation,
            CompensationDecision("charge", "refunded by hand in the provider console"),
        )
        assert resolved == "resolved"
        result = await handle.result()
    assert result.compensated_steps == ["create_order", "charge", "reserve:A"]
    assert fakes.calls[-1] == "release:A"
    assert fakes.journal[-3:] == [
        "CompensationParked:charge",
        "CompensationResolved:charge",
        "SagaCompensated",
    ]


async def test_deliver_before_shipping_and_cancel_after_shipping_are_refused(
    env: WorkflowEnvironment,
) -> None:
    fakes = Fakes()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    inp = order_input("A")
    async with worker(env, fakes, queue):
        handle = await env.client.start_workflow(
            OrderSagaWorkflow.run, inp, id=inp.order_id, task_queue=queue
        )
        with pytest.raises(WorkflowUpdateFailedError) as early:
            _ = await handle.execute_update(OrderSagaWorkflow.deliver)
        assert "cannot deliver" in str(early.value.cause)
        await _wait_status(handle, "awaiting_shipment")
        assert await handle.execute_update(OrderSagaWorkflow.ship, _ship()) == "shipped"
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            _ = await handle.execute_update(OrderSagaWorkflow.cancel, CancelRequest("late"))
        assert f"Order {inp.order_id} is shipped: cannot cancel" in str(refused.value.cause)
        _ = await handle.execute_update(OrderSagaWorkflow.deliver)
        await handle.result()
    assert "refund" not in fakes.calls
    assert fakes.calls[-2:] == ["sell:A", "deliver"]


# --- the helper on its own: a three-step saga of another domain -------------------


@activity.defn(name="step_one")
async def step_one(n: int) -> int:
    return n


@activity.defn(name="undo_one")
async def undo_one(n: int) -> None:
    UNDONE.append(f"undo_one:{n}")


@activity.defn(name="step_two")
async def step_two(n: int) -> int:
    return n


@activity.defn(name="undo_two")
async def undo_two(n: int) -> None:
    UNDONE.append(f"undo_two:{n}")


@activity.defn(name="step_three")
async def step_three(n: int) -> int:
    raise ApplicationError("nope", type="Refused", non_retryable=True)


@activity.defn(name="undo_three")
async def undo_three(n: int) -> None:
    UNDONE.append(f"undo_three:{n}")


@activity.defn(name="record_saga_events")
async def journal_activity(records: list[SagaRecord]) -> None:
    return None


UNDONE: list[str] = []

_FAST = StepOptions(retry=RetryKnobs(0.01, 1.0, 0.01, 1), local=True)

THREE_STEP = SagaDefinition(
    name="ThreeStep",
    input=int,
    result=SagaResult,
    steps=tuple(
        Step(action.__name__, COMPENSATABLE, action, undo, options=_FAST)
        for action, undo in ((step_one, undo_one), (step_two, undo_two), (step_three, undo_three))
    ),
)
ThreeStepSaga = linear_saga(THREE_STEP, "ThreeStepSaga")
"""A linear saga that is not about orders: proves the engine is reusable."""


async def test_helper_compensates_every_registered_step_in_reverse_order(
    env: WorkflowEnvironment,
) -> None:
    UNDONE.clear()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    activities = [step_one, undo_one, step_two, undo_two, step_three, undo_three]
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ThreeStepSaga],
        activities=[*activities, journal_activity],
    ):
        result = await env.client.execute_workflow(
            "ThreeStep", 7, id=f"s-{uuid.uuid4().hex[:8]}", task_queue=queue,
            result_type=SagaResult,
        )  # fmt: skip
    undone = result.compensated_steps
    assert result.status == "compensated"
    # The failed step's compensation was registered before it ran, so it runs too
    # (it must be a no-op when the step did nothing).
    assert undone == ["step_three", "step_two", "step_one"]
    assert UNDONE == ["undo_three:7", "undo_two:7", "undo_one:7"]


def _ship() -> Any:
    from workflows.models import ShipRequest

    return ShipRequest("TRK", "DHL")


async def _wait_status(handle: Any, wanted: str) -> Any:
    for _ in range(200):
        status = await handle.query(OrderSagaWorkflow.status)
        if status.status == wanted:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached {wanted}: {status}")
