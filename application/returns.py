"""Return use cases: open a return for a delivered order (start its saga), receive the
goods, read a return back.

Opening checks the request's shape first with no I/O, then reads the order from the
event store and refuses (409, with the reason) an order that is not delivered or a
quantity beyond what was delivered minus what other returns already claimed: a
refused request writes nothing. The saga's first step enforces the same rule on the
order stream, so two racing returns cannot both claim the same units.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from application.context import Context
from application.errors import IdempotencyKeyReused, NotFound, Refused
from application.orders import claim_idempotency_key, release_idempotency_key, request_hash
from domain.errors import InvalidCommand
from domain.order import Order
from eventstore import Repository
from projections import queries
from sagaflow.settings import Settings
from workflows import client as sagas
from workflows.models import RetryKnobs
from workflows.registry import default_registry
from workflows.returns_models import (
    RECEIVE,
    RETURN_SAGA,
    ReceiveRequest,
    ReturnLineInput,
    ReturnSagaInput,
    ReturnSagaOptions,
)

RETURN_NAMESPACE = uuid.UUID("0b7d4a52-3a6e-4f0e-9a61-2f4f0c9f7e21")
"""Return ids derived from Idempotency-Keys: ``uuid5(RETURN_NAMESPACE, order id + key)``."""

MAX_REASON = 500


class ReturnRefused(Refused):
    """The order cannot take this return (not delivered, too many units); nothing written."""


@dataclass(frozen=True)
class ReturnOpened:
    """An accepted return: its id."""

    return_id: str
    order_id: str


def return_options(settings: Settings) -> ReturnSagaOptions:
    """The returns saga's knobs from settings, frozen into its input."""
    base = sagas.saga_options(settings)
    step = base.step_retry
    return ReturnSagaOptions(
        receive_deadline_s=settings.returns_receive_deadline_s,
        start_to_close_s=base.start_to_close_s,
        local_activities=base.local_activities,
        step_retry=step,
        compensation_retry=base.compensation_retry,
        refund_retry=RetryKnobs(
            step.initial_interval_s,
            step.backoff,
            step.max_interval_s,
            settings.returns_refund_retry_max_attempts,
        ),
        notification_retry=base.notification_retry,
    )


def validate_return_shape(
    lines: Sequence[tuple[str, int]], reason: str, settings: Settings
) -> None:
    """Raise InvalidCommand for a malformed request (no I/O)."""
    problems: list[str] = []
    if not lines:
        problems.append("lines: a return needs at least one line")
    if len(lines) > settings.order_max_lines:
        problems.append(f"lines: at most {settings.order_max_lines} lines")
    skus = [sku for sku, _ in lines]
    if len(set(skus)) != len(skus):
        problems.append("lines: each sku appears on at most one line")
    for n, (sku, quantity) in enumerate(lines):
        if not sku.strip():
            problems.append(f"lines[{n}].sku: must not be empty")
        if quantity <= 0:
            problems.append(f"lines[{n}].quantity: must be positive, got {quantity}")
    if not reason.strip():
        problems.append("reason: must not be empty")
    elif len(reason) > MAX_REASON:
        problems.append(f"reason: at most {MAX_REASON} characters")
    if problems:
        raise InvalidCommand(problems)


def check_returnable(order: Order, lines: Sequence[tuple[str, int]]) -> None:
    """Raise ReturnRefused unless the delivered order can take back ``lines``."""
    if order.status != "delivered":
        raise ReturnRefused(
            f"Order {order.id} is {order.status}: only a delivered order can be returned"
        )
    for sku, quantity in lines:
        if sku not in order.lines:
            raise ReturnRefused(f"Order {order.id} has no line for sku {sku}")
        returnable = order.returnable_units(sku)
        if quantity > returnable:
            raise ReturnRefused(
                f"Order {order.id}: {quantity} units of {sku} exceed the {returnable} "
                f"returnable ({order.lines[sku].quantity} delivered, "
                f"{order.returned_units(sku)} already returned)"
            )


async def open_return(
    ctx: Context,
    order_id: str,
    lines: Sequence[tuple[str, int]],
    reason: str,
    *,
    idempotency_key: str | None = None,
    user_id: str = "",
) -> ReturnOpened:
    """Validate, check the order, claim the idempotency key, start the returns saga."""
    validate_return_shape(lines, reason, ctx.settings)
    client = ctx.require_temporal()
    key = f"return:{order_id}:{idempotency_key}" if idempotency_key else ""
    body_hash = request_hash(
        {"order_id": order_id, "lines": [list(li) for li in lines], "reason": reason}
    )
    if key and await _key_taken(ctx, key, body_hash):
        # Why before the rule check: a retried request must get the same return,
        # not a refusal for the units its own first attempt claimed.
        return ReturnOpened(
            return_id=str(uuid.uuid5(RETURN_NAMESPACE, f"{order_id}/{idempotency_key}")),
            order_id=order_id,
        )
    order = await Repository(ctx.store, Order).load(order_id)
    if order.status == "new":
        raise NotFound("order", order_id)
    check_returnable(order, lines)
    if idempotency_key:
        return_id = str(uuid.uuid5(RETURN_NAMESPACE, f"{order_id}/{idempotency_key}"))
    else:
        return_id = str(uuid.uuid4())
    claimed = await claim_idempotency_key(ctx, key, body_hash, return_id) if key else False
    saga_input = ReturnSagaInput(
        return_id=return_id,
        order_id=order_id,
        customer_id=order.customer_id or "",
        reason=reason,
        lines=[ReturnLineInput(sku, quantity) for sku, quantity in lines],
        options=return_options(ctx.settings),
        user_id=user_id,
    )
    try:
        await sagas.start_saga(
            client,
            ctx.settings,
            default_registry().get(RETURN_SAGA),
            saga_input,
            saga_id=return_id,
        )
    except Exception:
        if claimed:
            await release_idempotency_key(ctx, key)
        raise
    return ReturnOpened(return_id=return_id, order_id=order_id)


async def _key_taken(ctx: Context, key: str, body_hash: str) -> bool:
    """Whether ``key`` was already used with this body (IdempotencyKeyReused if another)."""
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT request_hash FROM api_idempotency_keys WHERE key = %s", (key,)
        )
        row = await cur.fetchone()
    if row is None:
        return False
    if row[0] != body_hash:
        raise IdempotencyKeyReused()
    return True


async def receive_return(ctx: Context, return_id: str, note: str = "") -> dict[str, str]:
    """The goods arrived: advance the saga (refused unless it waits for them)."""
    client = ctx.require_temporal()
    try:
        saga_type = await sagas.saga_type_of(client, return_id)
    except sagas.SagaNotFound:
        raise NotFound("return", return_id) from None
    if saga_type != RETURN_SAGA:
        raise NotFound("return", return_id)
    try:
        result = await sagas.saga_update(client, return_id, RECEIVE, ReceiveRequest(note))
    except sagas.SagaRequestRefused as exc:
        raise Refused(str(exc)) from None
    return {"return_id": return_id, "result": result}


async def return_summary(ctx: Context, return_id: str) -> dict[str, Any]:
    """The return's read model row (NotFound until projected)."""
    row = await queries.return_summary(ctx.pool, return_id)
    if row is None:
        raise NotFound("return", return_id)
    return row
