"""Temporal handles of the order saga: start it, steer it (updates), query it.

Not imported by workflow code. Every function takes its client (and settings) as
arguments: no connections at import time. Validation and the catalogue live in the
service layer (``application.orders``), which calls these.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from sagaflow.settings import Settings
from workflows.models import (
    CANCEL,
    DELIVER,
    OUTCOME,
    RESOLVE_COMPENSATION,
    RETRY_COMPENSATION,
    SHIP,
    CancelRequest,
    CompensationDecision,
    OrderSagaInput,
    OrderSagaResult,
    RetryKnobs,
    SagaOptions,
    SagaStatus,
    ShipRequest,
)
from workflows.order_saga import OrderSagaWorkflow

__all__ = [
    "OrderNotFound",
    "OrderRequestRefused",
    "await_outcome",
    "cancel_order",
    "deliver_order",
    "get_status",
    "resolve_compensation",
    "retry_compensation",
    "saga_options",
    "ship_order",
    "start_order_saga",
]


class OrderNotFound(LookupError):
    """No saga runs or ran for this order id."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id} does not exist")


class OrderRequestRefused(Exception):
    """The saga refused a request (wrong state, nothing parked, ...); nothing changed."""


def saga_options(settings: Settings) -> SagaOptions:
    """The saga's tuning from settings, frozen into each new workflow's input."""
    step = RetryKnobs(
        initial_interval_s=settings.activity_retry_initial_s,
        backoff=settings.activity_retry_backoff,
        max_interval_s=settings.activity_retry_max_interval_s,
        max_attempts=settings.activity_retry_max_attempts,
    )
    return SagaOptions(
        ship_deadline_s=settings.saga_ship_deadline_s,
        delivery_timeout_s=settings.saga_delivery_timeout_s,
        start_to_close_s=settings.activity_start_to_close_s,
        local_activities=settings.saga_local_activities,
        step_retry=step,
        compensation_retry=RetryKnobs(
            step.initial_interval_s,
            step.backoff,
            step.max_interval_s,
            settings.compensation_retry_max_attempts,
        ),
        notification_retry=RetryKnobs(
            step.initial_interval_s,
            step.backoff,
            step.max_interval_s,
            settings.notification_retry_max_attempts,
        ),
    )


async def start_order_saga(
    client: Client,
    settings: Settings,
    saga_input: OrderSagaInput,
    *,
    task_queue: str | None = None,
) -> WorkflowHandle[OrderSagaWorkflow, OrderSagaResult]:
    """Start the order's saga (workflow id = order id); idempotent.

    Starting an order id that already has a saga, running or finished, returns that
    saga's handle: never a second saga for one order.
    """
    try:
        return await client.start_workflow(
            OrderSagaWorkflow.run,
            saga_input,
            id=saga_input.order_id,
            task_queue=task_queue or settings.task_queue,
            # Running: attach to it. Finished: refuse a new run (caught below).
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            # Eager start: when this client's process also runs a worker on the task
            # queue, the first workflow task comes back in the start response (one
            # round trip less); otherwise the server ignores the request.
            request_eager_start=True,
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle_for(OrderSagaWorkflow.run, saga_input.order_id)


def _handle(client: Client, order_id: str) -> WorkflowHandle[OrderSagaWorkflow, Any]:
    return client.get_workflow_handle_for(OrderSagaWorkflow.run, order_id)


async def get_status(client: Client, order_id: str) -> SagaStatus:
    """The saga's status query (works on finished sagas too)."""
    try:
        return await _handle(client, order_id).query(OrderSagaWorkflow.status)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(order_id) from None
        raise
    except WorkflowQueryFailedError as err:
        raise OrderRequestRefused(str(err)) from None


async def _update(client: Client, order_id: str, name: str, *args: Any) -> str:
    handle = _handle(client, order_id)
    try:
        return str(await handle.execute_update(name, args=list(args), result_type=str))
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        raise OrderRequestRefused(message) from None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # Not found: either no such workflow, or it already finished.
        status = await get_status(client, order_id)
        raise OrderRequestRefused(
            f"Order {order_id} is {status.status}: cannot {name} (the saga has finished)"
        ) from None


async def await_outcome(client: Client, order_id: str) -> str:
    """Wait until the order is confirmed ("awaiting_shipment") or compensated."""
    return await _update(client, order_id, OUTCOME)


async def ship_order(client: Client, order_id: str, tracking_number: str, carrier: str) -> str:
    """Ship a confirmed order; returns "shipped" or raises OrderRequestRefused/NotFound."""
    return await _update(client, order_id, SHIP, ShipRequest(tracking_number, carrier))


async def deliver_order(client: Client, order_id: str) -> str:
    """Confirm delivery of a shipped order; returns "delivered"."""
    return await _update(client, order_id, DELIVER)


async def cancel_order(client: Client, order_id: str, reason: str) -> str:
    """Cancel before shipping; returns "compensated" (or "compensation_parked")."""
    return await _update(client, order_id, CANCEL, CancelRequest(reason))


async def retry_compensation(client: Client, order_id: str, step: str, note: str = "") -> str:
    """Retry a parked compensation; returns its status after the attempt."""
    return await _update(client, order_id, RETRY_COMPENSATION, CompensationDecision(step, note))


async def resolve_compensation(client: Client, order_id: str, step: str, note: str) -> str:
    """Mark a parked compensation done by hand; returns "resolved"."""
    return await _update(client, order_id, RESOLVE_COMPENSATION, CompensationDecision(step, note))
