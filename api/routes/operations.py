"""Analytics and dead letters: what operators look at and act on (parked sagas: the
inbox in ``api.routes.sagas``)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.deps import Admin, Reader
from api.errors import PROBLEM_RESPONSES
from api.models import DeadLetterOut, ResolutionOut
from application import operations

router = APIRouter(responses=PROBLEM_RESPONSES)
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/analytics/daily-sales", tags=["analytics"])
async def daily_sales(c: Reader, limit: Limit = 31) -> list[dict[str, Any]]:
    """Orders, revenue, cancellations and refunds per day."""
    return await operations.daily_sales(c.ctx, limit)


@router.get("/analytics/daily-returns", tags=["analytics"])
async def daily_returns(c: Reader, limit: Limit = 31) -> list[dict[str, Any]]:
    """Returns opened, expired, cancelled and refunded (with amounts) per day."""
    return await operations.daily_returns(c.ctx, limit)


@router.get("/analytics/products", tags=["analytics"])
async def product_sales(c: Reader, limit: Limit = 100) -> list[dict[str, Any]]:
    """Units and revenue per product, best first."""
    return await operations.product_sales(c.ctx, limit)


@router.get("/analytics/sagas", tags=["analytics"])
async def saga_outcomes(c: Reader) -> list[dict[str, Any]]:
    """Completed, compensated and parked sagas per saga type."""
    return await operations.saga_outcomes(c.ctx)


DeadLetterId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/dead-letters", tags=["dead letters"], response_model=list[DeadLetterOut])
async def dead_letters(
    c: Reader,
    status: Annotated[str | None, Query(pattern="^(open|replayed|skipped)$")] = "open",
) -> list[dict[str, Any]]:
    """Dead-lettered messages (open ones by default)."""
    return await operations.dead_letters(c.ctx, status)


@router.post(
    "/dead-letters/{dead_letter_id}/replay", tags=["dead letters"], response_model=ResolutionOut
)
async def replay_dead_letter(dead_letter_id: DeadLetterId, c: Admin) -> dict[str, Any]:
    """Apply the dead letter again (after a fix), then release its stream's parked messages."""
    return dataclasses.asdict(await operations.replay_dead_letter(c.ctx, dead_letter_id))


@router.post(
    "/dead-letters/{dead_letter_id}/skip", tags=["dead letters"], response_model=ResolutionOut
)
async def skip_dead_letter(dead_letter_id: DeadLetterId, c: Admin) -> dict[str, Any]:
    """Give up on the dead letter and release its stream's parked messages."""
    return dataclasses.asdict(await operations.skip_dead_letter(c.ctx, dead_letter_id))
