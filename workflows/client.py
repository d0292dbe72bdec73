"""Temporal handles of the order saga: start it, steer it (updates), query it.

Not imported by workflow code. Every function takes its client (and settings) as
arguments: no connections at import time. Validation and the catalogue live in the
service layer (``application.orders``), which calls these.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, TypeVar, cast

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
from workflows.definition import SagaDefinition
from workflows.engine import ENGINE_MEMO
from workflows.models import (
    CANCEL,
    DELIVER,
    OUTCOME,
    PLAN_QUERY,
    RESOLVE_COMPENSATION,
    RETRY_COMPENSATION,
    SHIP,
    SKIP_COMPENSATION,
    STATUS_QUERY,
    CancelRequest,
    CompensationDecision,
    EngineOptions,
    OrderSagaInput,
    OrderSagaResult,
    RetryKnobs,
    SagaOptions,
    SagaPlan,
    SagaStatus,
    ShipRequest,
)
from workflows.order_saga import ORDER, OrderSagaWorkflow
from workflows.registry import SagaType
from workflows.visibility import start_attributes

T = TypeVar("T")

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
        local_notifications=settings.saga_local_notifications,
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
            **start_options(ORDER, saga_input, settings),
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


# --- every saga type: start, steer and inspect through the engine's handlers -------


class SagaNotFound(LookupError):
    """No saga runs or ran under this id."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"saga {saga_id} does not exist")


class SagaRequestRefused(Exception):
    """The saga refused a request (wrong state, nothing parked...); nothing changed."""


def engine_options(settings: Settings) -> EngineOptions:
    """The engine knobs from settings, frozen into each new saga's memo."""
    return EngineOptions(
        search_attributes=settings.saga_search_attributes,
        escalate_after_s=settings.saga_escalate_after_s,
        # Why: search attributes are stored and indexed in clear whatever the codec;
        # with payloads encrypted, customer and traveler ids must not sit there.
        business_keys=not settings.codec_enabled,
    )


def start_options(
    definition: SagaDefinition, saga_input: Any, settings: Settings
) -> dict[str, Any]:
    """``start_workflow`` keyword arguments every saga gets: the engine memo, the
    initial search attributes, and a static summary for the Temporal UI's list."""
    options: dict[str, Any] = {
        "memo": {ENGINE_MEMO: dataclasses.asdict(engine_options(settings))},
        "static_summary": (
            definition.summary(saga_input) if definition.summary else definition.name
        ),
        "static_details": definition.description or definition.name,
    }
    if settings.saga_search_attributes:
        options["search_attributes"] = start_attributes(
            definition, saga_input, business_keys=not settings.codec_enabled
        )
    return options


async def start_saga(
    client: Client,
    settings: Settings,
    saga_type: SagaType,
    saga_input: Any,
    *,
    saga_id: str,
    task_queue: str | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start a saga of ``saga_type`` (workflow id = ``saga_id``); idempotent like
    ``start_order``: an id that already has a saga returns that saga's handle."""
    try:
        return await client.start_workflow(
            saga_type.name,
            saga_input,
            id=saga_id,
            task_queue=task_queue or settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            request_eager_start=True,
            **start_options(saga_type.definition, saga_input, settings),
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(saga_id)


async def saga_status(client: Client, saga_id: str) -> SagaStatus:
    """The status query of any saga type (works on finished sagas too)."""
    return await _query(client, saga_id, STATUS_QUERY, SagaStatus)


async def saga_plan(client: Client, saga_id: str) -> SagaPlan:
    """The plan query: the compensation a cancel or failure would run now."""
    return await _query(client, saga_id, PLAN_QUERY, SagaPlan)


async def saga_type_of(client: Client, saga_id: str) -> str:
    """The workflow type of a saga (raises SagaNotFound)."""
    try:
        desc = await client.get_workflow_handle(saga_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise SagaNotFound(saga_id) from None
        raise
    return desc.workflow_type


async def _query(client: Client, saga_id: str, name: str, result_type: type[T]) -> T:
    try:
        result = await client.get_workflow_handle(saga_id).query(name, result_type=result_type)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise SagaNotFound(saga_id) from None
        raise
    except WorkflowQueryFailedError as err:
        raise SagaRequestRefused(str(err)) from None
    return cast(T, result)


async def saga_update(client: Client, saga_id: str, name: str, *args: Any) -> str:
    """Run one of the engine's updates (cancel, retry/resolve/skip a parked step)."""
    handle = client.get_workflow_handle(saga_id)
    try:
        return str(await handle.execute_update(name, args=list(args), result_type=str))
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        raise SagaRequestRefused(message) from None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        status = await saga_status(client, saga_id)
        raise SagaRequestRefused(
            f"saga {saga_id} is {status.status}: cannot {name} (the saga has finished)"
        ) from None


Decision = Literal["retry", "resolve", "skip"]
_DECISIONS: dict[str, str] = {
    "retry": RETRY_COMPENSATION,
    "resolve": RESOLVE_COMPENSATION,
    "skip": SKIP_COMPENSATION,
}


async def decide_compensation(
    client: Client, saga_id: str, step: str, decision: Decision, *, note: str, operator: str
) -> str:
    """An operator's decision on a parked step, recorded with who and why."""
    return await saga_update(
        client, saga_id, _DECISIONS[decision], CompensationDecision(step, note, operator)
    )


async def cancel_saga(client: Client, saga_id: str, reason: str) -> str:
    """Cancel any saga type; returns "compensated" (or "compensation_parked")."""
    return await saga_update(client, saga_id, CANCEL, CancelRequest(reason))
