"""Orders: place (command), steer the saga (updates), read the summary, events, saga state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import READ_AUTH, Reader, Writer
from api.errors import PROBLEM_RESPONSES
from api.models import (
    TOKEN_PATTERN,
    CancelIn,
    EventOut,
    Ident,
    OrderAccepted,
    OrderCreate,
    OrderSummaryOut,
    PendingOrder,
    SagaCommandResult,
    ShipIn,
)
from application import orders

router = APIRouter(tags=["orders"], responses=PROBLEM_RESPONSES)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="same key + same body = same order; another body is refused (409)",
    ),
]


@router.post("/orders", status_code=202, response_model=OrderAccepted)
async def place_order(
    body: OrderCreate,
    response: Response,
    c: Writer,
    idempotency_key: IdempotencyKey = None,
) -> OrderAccepted:
    """Place an order: validates it, starts its saga, returns a consistency token."""
    placed = await orders.place_order(
        c.ctx,
        body.customer_id,
        [(line.sku, line.quantity) for line in body.lines],
        idempotency_key=idempotency_key,
        user_id=c.user_id,
        admit=c.container.backpressure.check,
    )
    c.container.metrics.orders_accepted.inc()
    location = f"/orders/{placed.order_id}"
    response.headers["Location"] = location
    return OrderAccepted(
        order_id=placed.order_id, consistency_token=placed.consistency_token, location=location
    )


@router.get(
    "/orders/{order_id}",
    response_model=OrderSummaryOut | PendingOrder,
    openapi_extra={"security": [{READ_AUTH.scheme_name: []}]},
)
async def get_order(
    order_id: Ident,
    request: Request,
    consistency_token: Annotated[
        str | None,
        Query(
            max_length=300,
            pattern=TOKEN_PATTERN,
            description="the token a write returned: waits (bounded) until it is visible",
        ),
    ] = None,
) -> Response:
    """The order summary; with a consistency token, waits (bounded) for your write."""
    # Why the key is checked here and not by a dependency, as on every other route:
    # this is the hottest read, and FastAPI's dependency solving cost about a third
    # of its requests/s (bench.api); the check and its 401/403 are the same.
    c = await READ_AUTH(request)
    body, reached = await orders.order_summary(
        c.ctx, order_id, consistency_token, summaries=c.container.summaries.get
    )
    headers = (
        {"X-Consistency-Reached": "true" if reached else "false"} if consistency_token else None
    )
    return Response(body, media_type="application/json", headers=headers)


@router.get("/orders/{order_id}/events", response_model=list[EventOut])
async def get_order_events(order_id: Ident, c: Reader) -> list[dict[str, Any]]:
    """The order's raw event stream, oldest first (empty until an accepted order's saga
    has created it)."""
    return await orders.order_events(c.ctx, order_id)


@router.get("/orders/{order_id}/saga")
async def get_order_saga(order_id: Ident, c: Reader) -> dict[str, Any]:
    """The saga's live state: current step, status, compensation log."""
    return await orders.saga_state(c.ctx, order_id)


@router.post("/orders/{order_id}/cancel", response_model=SagaCommandResult)
async def cancel_order(order_id: Ident, c: Writer, body: CancelIn | None = None) -> dict[str, str]:
    """Cancel before shipping: compensates everything done; refused after shipping."""
    reason = body.reason if body else "cancelled by request"
    return await orders.cancel_order(c.ctx, order_id, reason)


@router.post("/orders/{order_id}/ship", response_model=SagaCommandResult)
async def ship_order(order_id: Ident, body: ShipIn, c: Writer) -> dict[str, str]:
    """Record the shipment (tracking number, carrier) of a confirmed order."""
    return await orders.ship_order(c.ctx, order_id, body.tracking_number, body.carrier)


@router.post("/orders/{order_id}/deliver", response_model=SagaCommandResult)
async def deliver_order(order_id: Ident, c: Writer) -> dict[str, str]:
    """Record the delivery of a shipped order."""
    return await orders.deliver_order(c.ctx, order_id)


@router.get("/customers/{customer_id}/orders")
async def customer_orders(
    customer_id: Ident,
    c: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[dict[str, Any]]:
    """A customer's orders, newest first."""
    return await orders.customer_orders(c.ctx, customer_id, limit)
