"""Operator use cases: dead letters (replay, skip) and the analytics an operator looks
at before acting (parked compensations: ``application.sagas``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from application.context import Context
from application.errors import DeadLetterNotResolved, NotFound
from projections import deadletters, queries
from projections.handlers import default_projections


async def replay_dead_letter(ctx: Context, dead_letter_id: int) -> deadletters.Resolution:
    """Apply a dead letter again (after a fix), then release its stream's parked messages."""
    return await _resolve(ctx, dead_letter_id, replay=True)


async def skip_dead_letter(ctx: Context, dead_letter_id: int) -> deadletters.Resolution:
    """Give up on a dead letter and release its stream's parked messages."""
    return await _resolve(ctx, dead_letter_id, replay=False)


async def _resolve(ctx: Context, dead_letter_id: int, *, replay: bool) -> deadletters.Resolution:
    action = deadletters.replay_dead_letter if replay else deadletters.skip_dead_letter
    try:
        return await action(ctx.pool, dead_letter_id, default_projections(), ctx.store.upcasters)
    except deadletters.DeadLetterError as exc:
        message = str(exc)
        if message.startswith("no dead letter"):
            raise NotFound("dead letter", str(dead_letter_id)) from None
        raise DeadLetterNotResolved(message) from None


async def dead_letters(ctx: Context, status: str | None) -> list[dict[str, Any]]:
    """Dead letters of the projector (all of them when ``status`` is None)."""
    rows = await deadletters.list_dead_letters(ctx.pool, status=status)
    return [_jsonable(dataclasses.asdict(r)) for r in rows]


async def daily_sales(ctx: Context, limit: int) -> list[dict[str, Any]]:
    """Sales per day (the newest ``limit`` days)."""
    rows = await queries.daily_sales(ctx.pool)
    return [r.model_dump(mode="json") for r in rows[-limit:]]


async def daily_returns(ctx: Context, limit: int) -> list[dict[str, Any]]:
    """Returns per day (the newest ``limit`` days): opened, units, refunded cents."""
    rows = await queries.daily_returns(ctx.pool)
    return rows[-limit:]


async def product_sales(ctx: Context, limit: int) -> list[dict[str, Any]]:
    """Units and revenue per product, best first."""
    rows = await queries.product_sales(ctx.pool, limit=limit)
    return [r.model_dump(mode="json") for r in rows]


async def saga_outcomes(ctx: Context) -> list[dict[str, Any]]:
    """Saga outcome counts per saga type."""
    return [r.model_dump(mode="json") for r in await queries.saga_outcome_counts(ctx.pool)]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
