"""Query functions for the API's read side: a few lines of plain SQL each.

Every function takes the read-model database's ``AsyncConnectionPool`` (the event
store's pool works: same database) and returns pydantic models ready to serialise.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel


class OrderLine(BaseModel):
    """One line of an order."""

    sku: str
    name: str
    quantity: int
    unit_price_cents: int


class OrderSummary(BaseModel):
    """An order as the customer and support see it."""

    order_id: str
    customer_id: str
    status: str
    lines: list[OrderLine]
    total_cents: int
    paid_cents: int
    payment_id: str | None
    tracking_number: str | None
    carrier: str | None
    cancel_reason: str | None
    #: ``created_at``, ``submitted_at``, ``paid_at``, ``shipped_at``, ``delivered_at``,
    #: ``cancelled_at`` (ISO timestamps), each present once it happened
    timeline: dict[str, datetime]
    version: int
    updated_at: datetime


class CustomerOrder(BaseModel):
    """One entry of a customer's order list."""

    order_id: str
    status: str
    total_cents: int
    created_at: datetime
    updated_at: datetime


class InventoryLevel(BaseModel):
    """Stock of one SKU."""

    sku: str
    name: str | None
    unit_price_cents: int | None
    available: int
    reserved: int
    sold: int
    updated_at: datetime


class DailySales(BaseModel):
    """Sales of one UTC day."""

    day: date
    orders: int
    revenue_cents: int
    cancellations: int
    refunds: int
    refunded_cents: int


class ProductSales(BaseModel):
    """Units and revenue of one SKU from submitted, not cancelled, orders."""

    sku: str
    name: str
    units: int
    revenue_cents: int


class ParkedStep(BaseModel):
    """One step waiting for an operator: a compensation, or a forward step after the pivot."""

    step: str
    phase: str
    error: str
    parked_at: datetime
    escalated: bool = False


class SagaOutcome(BaseModel):
    """One saga in the saga read model."""

    saga_id: str
    saga_type: str
    order_id: str | None
    status: str
    current_step: str = ""
    keys: dict[str, str] = {}
    reason: str | None
    failure: str | None = None
    parked: list[ParkedStep] = []
    parked_steps: list[str]
    escalated_steps: list[str] = []
    started_at: datetime
    updated_at: datetime


class SagaOutcomeCounts(BaseModel):
    """Saga outcomes per status for one saga type.

    ``parked`` counts ``compensation_parked``; ``completed`` counts every status a
    saga reaches after its forward steps (``completed``, or its own flow's, like the
    order saga's ``awaiting_shipment``/``shipped``/``delivered``); ``statuses`` has
    each status as reported.
    """

    saga_type: str
    running: int = 0
    completed: int = 0
    compensating: int = 0
    compensated: int = 0
    parked: int = 0
    statuses: dict[str, int] = {}


class InboxEntry(BaseModel):
    """A parked step in the fleet-wide inbox, with how long it has waited."""

    saga_id: str
    saga_type: str
    keys: dict[str, str]
    step: str
    phase: str
    error: str
    parked_at: datetime
    waited_s: float
    escalated: bool


class ParkedCounts(BaseModel):
    """Parked and escalated steps of one saga type (the /metrics gauges)."""

    saga_type: str
    parked: int
    escalated: int


async def _rows(pool: AsyncConnectionPool, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query, params)
        return await cur.fetchall()


async def get_order_summary(pool: AsyncConnectionPool, order_id: str) -> OrderSummary | None:
    """The order's summary, or None when the read model has not seen it (yet)."""
    rows = await _rows(pool, "SELECT * FROM order_summary WHERE order_id = %s", (order_id,))
    return OrderSummary.model_validate(rows[0]) if rows else None


async def order_summaries_json(
    pool: AsyncConnectionPool, order_ids: Sequence[str]
) -> dict[str, str]:
    """The summaries of ``order_ids`` as JSON text, keyed by order id (absent: unseen).

    Why JSON text: PostgreSQL renders the row, so the hottest read skips building
    and re-serialising Python objects.
    """
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT order_id, to_jsonb(o)::text FROM order_summary o WHERE order_id = ANY(%s)",
            (list(order_ids),),
        )
        return {str(row[0]): str(row[1]) for row in await cur.fetchall()}


async def applied_version(pool: AsyncConnectionPool, stream_id: str) -> int | None:
    """The highest version of ``stream_id`` any read model has applied (None: none yet)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT max(version) FROM projection_watermarks WHERE stream_id = %s", (stream_id,)
        )
        row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def list_customer_orders(
    pool: AsyncConnectionPool, customer_id: str, *, limit: int = 100, offset: int = 0
) -> list[CustomerOrder]:
    """A customer's orders, newest first."""
    rows = await _rows(
        pool,
        "SELECT * FROM customer_orders WHERE customer_id = %s "
        "ORDER BY created_at DESC, order_id LIMIT %s OFFSET %s",
        (customer_id, limit, offset),
    )
    return [CustomerOrder.model_validate(r) for r in rows]


async def get_inventory_level(pool: AsyncConnectionPool, sku: str) -> InventoryLevel | None:
    """One SKU's stock, or None when unknown."""
    rows = await _rows(pool, "SELECT * FROM inventory_levels WHERE sku = %s", (sku,))
    return InventoryLevel.model_validate(rows[0]) if rows else None


async def list_inventory_levels(
    pool: AsyncConnectionPool, *, limit: int = 500, offset: int = 0
) -> list[InventoryLevel]:
    """Every SKU's stock, by SKU."""
    rows = await _rows(
        pool, "SELECT * FROM inventory_levels ORDER BY sku LIMIT %s OFFSET %s", (limit, offset)
    )
    return [InventoryLevel.model_validate(r) for r in rows]


async def daily_sales(
    pool: AsyncConnectionPool, *, since: date | None = None, until: date | None = None
) -> list[DailySales]:
    """Sales per day in ``[since, until]`` (both optional), oldest first."""
    rows = await _rows(
        pool,
        "SELECT * FROM daily_sales WHERE (%(since)s::date IS NULL OR day >= %(since)s) "
        "AND (%(until)s::date IS NULL OR day <= %(until)s) ORDER BY day",
        {"since": since, "until": until},
    )
    return [DailySales.model_validate(r) for r in rows]


async def product_sales(pool: AsyncConnectionPool, *, limit: int = 100) -> list[ProductSales]:
    """Best-selling SKUs first (by revenue)."""
    rows = await _rows(
        pool, "SELECT * FROM product_sales ORDER BY revenue_cents DESC, sku LIMIT %s", (limit,)
    )
    return [ProductSales.model_validate(r) for r in rows]


async def get_saga_outcome(pool: AsyncConnectionPool, saga_id: str) -> SagaOutcome | None:
    """One saga's outcome, or None when unknown."""
    rows = await _rows(pool, "SELECT * FROM saga_outcomes WHERE saga_id = %s", (saga_id,))
    return SagaOutcome.model_validate(rows[0]) if rows else None


async def list_saga_outcomes(
    pool: AsyncConnectionPool,
    *,
    status: str | None = None,
    saga_type: str | None = None,
    key: tuple[str, str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[SagaOutcome]:
    """Sagas, most recently changed first, filtered by status, type and one business
    key (``(name, value)``, matched by the GIN index on ``keys``)."""
    rows = await _rows(
        pool,
        "SELECT * FROM saga_outcomes WHERE (%(status)s::text IS NULL OR status = %(status)s) "
        "AND (%(type)s::text IS NULL OR saga_type = %(type)s) "
        "AND (%(key)s::jsonb IS NULL OR keys @> %(key)s::jsonb) "
        "ORDER BY updated_at DESC, saga_id LIMIT %(limit)s OFFSET %(offset)s",
        {
            "status": status,
            "type": saga_type,
            "key": Jsonb({key[0]: key[1]}) if key else None,
            "limit": limit,
            "offset": offset,
        },
    )
    return [SagaOutcome.model_validate(r) for r in rows]


async def parked_inbox(
    pool: AsyncConnectionPool,
    *,
    saga_type: str | None = None,
    step: str | None = None,
    limit: int = 1000,
) -> list[InboxEntry]:
    """Every parked step of every saga type, longest waiting first."""
    rows = await _rows(
        pool,
        "SELECT o.saga_id, o.saga_type, o.keys, p->>'step' AS step, p->>'phase' AS phase, "
        "p->>'error' AS error, (p->>'parked_at')::timestamptz AS parked_at, "
        "extract(epoch FROM now() - (p->>'parked_at')::timestamptz)::float8 AS waited_s, "
        "coalesce((p->>'escalated')::boolean, false) AS escalated "
        "FROM saga_outcomes o, jsonb_array_elements(o.parked) AS p "
        "WHERE o.status = 'compensation_parked' "
        "AND (%(type)s::text IS NULL OR o.saga_type = %(type)s) "
        "AND (%(step)s::text IS NULL OR p->>'step' = %(step)s) "
        "ORDER BY parked_at, o.saga_id LIMIT %(limit)s",
        {"type": saga_type, "step": step, "limit": limit},
    )
    return [InboxEntry.model_validate(r) for r in rows]


async def parked_counts(pool: AsyncConnectionPool) -> list[ParkedCounts]:
    """Parked and escalated steps per saga type."""
    rows = await _rows(
        pool,
        "SELECT saga_type, sum(jsonb_array_length(parked))::int AS parked, "
        "sum(jsonb_array_length(escalated_steps))::int AS escalated "
        "FROM saga_outcomes WHERE status = 'compensation_parked' GROUP BY 1 ORDER BY 1",
    )
    return [ParkedCounts.model_validate(r) for r in rows]


_COUNTED = {
    "running": "running",
    "compensating": "compensating",
    "compensated": "compensated",
    "compensation_parked": "parked",
}


async def saga_outcome_counts(pool: AsyncConnectionPool) -> list[SagaOutcomeCounts]:
    """Completed, compensated, parked (and running) sagas per saga type."""
    rows = await _rows(
        pool,
        "SELECT saga_type, status, count(*) AS n FROM saga_outcomes GROUP BY 1, 2 ORDER BY 1",
    )
    counts: dict[str, SagaOutcomeCounts] = {}
    for row in rows:
        entry = counts.setdefault(row["saga_type"], SagaOutcomeCounts(saga_type=row["saga_type"]))
        status, n = row["status"], int(row["n"])
        entry.statuses[status] = n
        field = _COUNTED.get(status, "completed")
        setattr(entry, field, getattr(entry, field) + n)
    return list(counts.values())


async def return_summary(pool: AsyncConnectionPool, return_id: str) -> dict[str, Any] | None:
    """The return's summary row (JSON-safe), or None when not projected (yet)."""
    rows = await _rows(pool, "SELECT * FROM return_summary WHERE return_id = %s", (return_id,))
    if not rows:
        return None
    row = dict(rows[0])
    row["updated_at"] = row["updated_at"].isoformat()
    return row


async def daily_returns(pool: AsyncConnectionPool) -> list[dict[str, Any]]:
    """Returns per day, oldest first: opened, units, expired, cancelled, refunded (cents)."""
    rows = await _rows(pool, "SELECT * FROM daily_returns ORDER BY day")
    return [{**r, "day": r["day"].isoformat()} for r in rows]
