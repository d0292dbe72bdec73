"""Analytics, parked sagas and dead letters: what operators look at and act on."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.deps import Admin, Reader
from api.errors import PROBLEM_RESPONSES
from api.messages import (
    DailySalesQuery,
    DeadLettersQuery,
    ParkedSagasQuery,
    ProductSalesQuery,
    ReplayDeadLetterCommand,
    ResolveCompensationCommand,
    RetryCompensationCommand,
    SagaOutcomesQuery,
    SkipDeadLetterCommand,
)
from api.models import CompensationDecisionIn, Ident, ResolutionOut, SagaCommandResult

router = APIRouter(responses=PROBLEM_RESPONSES)
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/analytics/daily-sales", tags=["analytics"])
async def daily_sales(c: Reader, limit: Limit = 31) -> list[dict[str, Any]]:
    """Orders, revenue, cancellations and refunds per day."""
    rows: list[dict[str, Any]] = await c.queries.dispatch(DailySalesQuery(limit))
    return rows


@router.get("/analytics/products", tags=["analytics"])
async def product_sales(c: Reader, limit: Limit = 100) -> list[dict[str, Any]]:
    """Units and revenue per product, best first."""
    rows: list[dict[str, Any]] = await c.queries.dispatch(ProductSalesQuery(limit))
    return rows


@router.get("/analytics/sagas", tags=["analytics"])
async def saga_outcomes(c: Reader) -> list[dict[str, Any]]:
    """Completed, compensated and parked sagas per saga type."""
    rows: list[dict[str, Any]] = await c.queries.dispatch(SagaOutcomesQuery())
    return rows


@router.get("/sagas/parked", tags=["sagas"])
async def parked_sagas(c: Reader, limit: Limit = 100) -> list[dict[str, Any]]:
    """Sagas whose compensation failed and waits for an operator."""
    rows: list[dict[str, Any]] = await c.queries.dispatch(ParkedSagasQuery(limit))
    return rows


@router.post(
    "/sagas/{saga_id}/retry-compensation", tags=["sagas"], response_model=SagaCommandResult
)
async def retry_compensation(
    saga_id: Ident, body: CompensationDecisionIn, c: Admin
) -> dict[str, str]:
    """Retry a parked compensation now."""
    result: dict[str, str] = await c.commands.dispatch(
        RetryCompensationCommand(saga_id, body.step, body.note)
    )
    return result


@router.post("/sagas/{saga_id}/resolve", tags=["sagas"], response_model=SagaCommandResult)
async def resolve_compensation(
    saga_id: Ident, body: CompensationDecisionIn, c: Admin
) -> dict[str, str]:
    """Mark a parked compensation as done by hand (the note says how)."""
    result: dict[str, str] = await c.commands.dispatch(
        ResolveCompensationCommand(saga_id, body.step, body.note)
    )
    return result


DeadLetterId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/dead-letters", tags=["dead letters"])
async def dead_letters(
    c: Reader,
    status: Annotated[str | None, Query(pattern="^(open|replayed|skipped)$")] = "open",
) -> list[dict[str, Any]]:
    """Dead-lettered messages (open ones by default)."""
    rows: list[dict[str, Any]] = await c.queries.dispatch(DeadLettersQuery(status))
    return rows


@router.post(
    "/dead-letters/{dead_letter_id}/replay", tags=["dead letters"], response_model=ResolutionOut
)
async def replay_dead_letter(dead_letter_id: DeadLetterId, c: Admin) -> dict[str, Any]:
    """Apply the dead letter again (after a fix), then release its stream's parked messages."""
    result: dict[str, Any] = await c.commands.dispatch(ReplayDeadLetterCommand(dead_letter_id))
    return result


@router.post(
    "/dead-letters/{dead_letter_id}/skip", tags=["dead letters"], response_model=ResolutionOut
)
async def skip_dead_letter(dead_letter_id: DeadLetterId, c: Admin) -> dict[str, Any]:
    """Give up on the dead letter and release its stream's parked messages."""
    result: dict[str, Any] = await c.commands.dispatch(SkipDeadLetterCommand(dead_letter_id))
    return result
