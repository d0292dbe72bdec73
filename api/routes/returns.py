"""Returns: open a return of a delivered order, receive its goods, read it back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from api.deps import Reader, Writer
from api.errors import PROBLEM_RESPONSES
from api.models import Ident, ReceiveIn, ReturnAccepted, ReturnCommandResult, ReturnCreate
from application import returns

router = APIRouter(tags=["returns"], responses=PROBLEM_RESPONSES)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="same key + same body = same return; another body is refused (409)",
    ),
]


@router.post("/orders/{order_id}/returns", status_code=202, response_model=ReturnAccepted)
async def open_return(
    order_id: Ident,
    body: ReturnCreate,
    response: Response,
    c: Writer,
    idempotency_key: IdempotencyKey = None,
) -> ReturnAccepted:
    """Open a return of a delivered order (409 if not delivered or too many units)."""
    opened = await returns.open_return(
        c.ctx,
        order_id,
        [(line.sku, line.quantity) for line in body.lines],
        body.reason,
        idempotency_key=idempotency_key,
        user_id=c.user_id,
    )
    location = f"/returns/{opened.return_id}"
    response.headers["Location"] = location
    return ReturnAccepted(return_id=opened.return_id, order_id=order_id, location=location)


@router.post("/returns/{return_id}/receive", response_model=ReturnCommandResult)
async def receive_return(
    return_id: Ident, c: Writer, body: ReceiveIn | None = None
) -> ReturnCommandResult:
    """The goods arrived: restock and refund follow (409 unless waiting for them)."""
    result = await returns.receive_return(c.ctx, return_id, body.note if body else "")
    return ReturnCommandResult(**result)


@router.get("/returns/{return_id}")
async def get_return(return_id: Ident, c: Reader) -> dict[str, Any]:
    """The return summary (read model)."""
    return await returns.return_summary(c.ctx, return_id)
