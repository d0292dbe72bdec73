"""Read-model handlers: batch adapters between the pure rules and PostgreSQL tables.

Each projection applies a batch of (recorded, decoded) pairs inside a transaction
the caller owns: it loads the rows the batch touches with one query, folds the
events with the pure functions of ``projections.models`` and writes the results with
one ``executemany``. The caller commits the read-model change and its checkpoint
together. Table names go through ``tables`` so a rebuild can write to fresh copies.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from domain.events import DomainEvent
from eventstore.envelope import RecordedEvent
from projections import models as m

Pair = tuple[RecordedEvent, DomainEvent]
Conn = AsyncConnection[Any]


class Projection(abc.ABC):
    """One read model: its tables, the stream types it follows, how a batch applies."""

    #: the read model's name (CLI, watermarks, dead letters)
    name: str
    #: live tables it owns; the first is the one queries read
    tables: tuple[str, ...]
    #: stream types (``Order``, ``Payment``...) whose events it receives, in version order
    stream_types: frozenset[str]

    @abc.abstractmethod
    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        """Apply ``pairs`` (feed order, deduplicated) inside the caller's transaction."""


def _t(tables: Mapping[str, str], name: str) -> sql.Identifier:
    return sql.Identifier(tables.get(name, name))


async def _load(
    conn: Conn, table: sql.Identifier, key: str, keys: list[str]
) -> dict[str, dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT * FROM {} WHERE {} = ANY(%s) FOR UPDATE").format(
            table, sql.Identifier(key)
        ),
        (keys,),
    )
    return {row[key]: row for row in await cur.fetchall()}


async def _upsert(
    conn: Conn, table: sql.Identifier, key: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    if not rows:
        return
    columns = list(rows[0])
    query = sql.SQL(
        "INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT ({key}) DO UPDATE SET {sets}"
    ).format(
        t=table,
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        vals=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in columns
            if c not in key
        ),
    )
    params = [
        # Why by column name: rows loaded from the table and rows built by a fold
        # list their keys in different orders.
        tuple(Jsonb(v) if isinstance(v, list | dict) else v for v in (row[c] for c in columns))
        for row in rows
    ]
    async with conn.cursor() as cur:
        await cur.executemany(query, params)


class _RowPerStream(Projection):
    """A view with one row per stream, evolved event by event (load, fold, save)."""

    key: str
    key_columns: tuple[str, ...]

    @abc.abstractmethod
    def key_of(self, recorded: RecordedEvent, event: DomainEvent) -> str:
        """The row key an event belongs to."""

    @abc.abstractmethod
    def evolve(
        self, row: dict[str, Any] | None, recorded: RecordedEvent, event: DomainEvent
    ) -> dict[str, Any]:
        """The row after the event."""

    def interested(self, event: DomainEvent) -> bool:
        """Whether the event changes this view at all."""
        return True

    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        """Load the touched rows, fold every event in order, write them back."""
        pairs = [p for p in pairs if self.interested(p[1])]
        if not pairs:
            return
        table = _t(tables, self.tables[0])
        keys = list(dict.fromkeys(self.key_of(r, e) for r, e in pairs))
        rows: dict[str, dict[str, Any] | None] = dict.fromkeys(keys)
        rows.update(await _load(conn, table, self.key, keys))
        for recorded, event in pairs:
            k = self.key_of(recorded, event)
            rows[k] = self.evolve(rows[k], recorded, event)
        await _upsert(conn, table, self.key_columns, [r for r in rows.values() if r is not None])


class OrderSummaryProjection(_RowPerStream):
    """``order_summary``: status, lines, total, payment, tracking and a timeline per order."""

    name = "order_summary"
    tables = ("order_summary",)
    stream_types = frozenset({"Order"})
    key = "order_id"
    key_columns = ("order_id",)

    def key_of(self, recorded: RecordedEvent, event: DomainEvent) -> str:
        """Orders are keyed by the id in their stream name."""
        return m.order_id_of(recorded)

    def evolve(
        self, row: dict[str, Any] | None, recorded: RecordedEvent, event: DomainEvent
    ) -> dict[str, Any]:
        """See ``models.evolve_order``."""
        return m.evolve_order(row, recorded, event)


class CustomerOrdersProjection(_RowPerStream):
    """``customer_orders``: every customer's orders with status and total."""

    name = "customer_orders"
    tables = ("customer_orders",)
    stream_types = frozenset({"Order"})
    key = "order_id"
    key_columns = ("customer_id", "order_id")

    def key_of(self, recorded: RecordedEvent, event: DomainEvent) -> str:
        """Rows are found by order id (the customer id comes with OrderCreated)."""
        return m.order_id_of(recorded)

    def evolve(
        self, row: dict[str, Any] | None, recorded: RecordedEvent, event: DomainEvent
    ) -> dict[str, Any]:
        """See ``models.evolve_customer_order``."""
        return m.evolve_customer_order(row, recorded, event)

    def interested(self, event: DomainEvent) -> bool:
        """Line edits do not change the customer's list."""
        return type(event).__name__ not in ("OrderItemAdded", "OrderItemRemoved")


class SagaOutcomesProjection(_RowPerStream):
    """``saga_outcomes``, the saga read model: one row per saga of every type (status,
    current step, business keys, failure, the parked inbox entries)."""

    name = "saga_outcomes"
    tables = ("saga_outcomes",)
    stream_types = frozenset({"Saga"})
    key = "saga_id"
    key_columns = ("saga_id",)

    def key_of(self, recorded: RecordedEvent, event: DomainEvent) -> str:
        """Sagas are keyed by the id in their stream name."""
        return recorded.stream_id.removeprefix("saga-")

    def evolve(
        self, row: dict[str, Any] | None, recorded: RecordedEvent, event: DomainEvent
    ) -> dict[str, Any]:
        """See ``models.evolve_saga``."""
        return m.evolve_saga(row, recorded, event)

    def interested(self, event: DomainEvent) -> bool:
        """A retry request changes nothing visible (its outcome is the next event)."""
        return type(event).__name__ != "CompensationRetried"


class InventoryLevelsProjection(Projection):
    """``inventory_levels``: available, reserved and sold units per SKU."""

    name = "inventory_levels"
    tables = ("inventory_levels",)
    stream_types = frozenset({"Inventory"})

    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        """Fold the batch into one delta per SKU, then add the deltas in one statement."""
        deltas: dict[str, m.StockDelta] = {}
        for recorded, event in pairs:
            m.stock_delta(deltas.setdefault(m.sku_of(recorded), m.StockDelta()), recorded, event)
        if not deltas:
            return
        # Why increments, not a read-modify-write: one statement, no row to load, and
        # the dedupe (watermarks) guarantees each event is added once.
        query = sql.SQL(
            """
            INSERT INTO {t} AS t (sku, name, unit_price_cents, available, reserved, sold,
                                  updated_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (sku) DO UPDATE SET
                name = coalesce(EXCLUDED.name, t.name),
                unit_price_cents = coalesce(EXCLUDED.unit_price_cents, t.unit_price_cents),
                available = t.available + EXCLUDED.available,
                reserved = t.reserved + EXCLUDED.reserved,
                sold = t.sold + EXCLUDED.sold,
                updated_at = EXCLUDED.updated_at
            """
        ).format(t=_t(tables, "inventory_levels"))
        async with conn.cursor() as cur:
            await cur.executemany(
                query,
                [
                    (sku, d.name, d.unit_price_cents, d.available, d.reserved, d.sold, d.updated_at)
                    for sku, d in sorted(deltas.items())
                ],
            )


class DailySalesProjection(Projection):
    """``daily_sales``: orders, revenue, cancellations and refunds per UTC day."""

    name = "daily_sales"
    tables = ("daily_sales",)
    stream_types = frozenset({"Order", "Payment"})

    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        """Sum the batch per day, then add the sums in one statement."""
        days: dict[date, m.DaySales] = {}
        for recorded, event in pairs:
            m.sales_delta(days, recorded, event)
        if not days:
            return
        query = sql.SQL(
            """
            INSERT INTO {t} AS t (day, orders, revenue_cents, cancellations, refunds,
                                  refunded_cents)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (day) DO UPDATE SET
                orders = t.orders + EXCLUDED.orders,
                revenue_cents = t.revenue_cents + EXCLUDED.revenue_cents,
                cancellations = t.cancellations + EXCLUDED.cancellations,
                refunds = t.refunds + EXCLUDED.refunds,
                refunded_cents = t.refunded_cents + EXCLUDED.refunded_cents
            """
        ).format(t=_t(tables, "daily_sales"))
        async with conn.cursor() as cur:
            await cur.executemany(
                query,
                [
                    (d, s.orders, s.revenue_cents, s.cancellations, s.refunds, s.refunded_cents)
                    for d, s in sorted(days.items())
                ],
            )


class ProductSalesProjection(Projection):
    """``product_sales``: units and revenue per SKU from submitted (not cancelled) orders."""

    name = "product_sales"
    tables = ("product_sales", "product_sales_orders")
    stream_types = frozenset({"Order"})

    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        """Fold each order's lines, then add per-SKU deltas and save the order state."""
        if not pairs:
            return
        orders_table = _t(tables, "product_sales_orders")
        keys = list(dict.fromkeys(m.order_id_of(r) for r, _ in pairs))
        states: dict[str, m.ProductSalesState | None] = dict.fromkeys(keys)
        for key, row in (await _load(conn, orders_table, "order_id", keys)).items():
            states[key] = m.ProductSalesState(list(row["lines"]), row["submitted"])
        deltas: dict[str, m.ProductDelta] = {}
        for recorded, event in pairs:
            key = m.order_id_of(recorded)
            states[key] = m.product_sales_step(states[key], deltas, recorded, event)
        await _upsert(
            conn,
            orders_table,
            ("order_id",),
            [
                {"order_id": k, "lines": s.lines, "submitted": s.submitted}
                for k, s in states.items()
                if s is not None
            ],
        )
        if not deltas:
            return
        query = sql.SQL(
            """
            INSERT INTO {t} AS t (sku, name, units, revenue_cents) VALUES (%s, %s, %s, %s)
            ON CONFLICT (sku) DO UPDATE SET
                name = EXCLUDED.name,
                units = t.units + EXCLUDED.units,
                revenue_cents = t.revenue_cents + EXCLUDED.revenue_cents
            """
        ).format(t=_t(tables, "product_sales"))
        async with conn.cursor() as cur:
            await cur.executemany(
                query,
                [(sku, d.name, d.units, d.revenue_cents) for sku, d in sorted(deltas.items())],
            )


class ReturnSummaryProjection(_RowPerStream):
    """``return_summary``: status, lines, total, refund and a timeline per return."""

    name = "return_summary"
    tables = ("return_summary",)
    stream_types = frozenset({"Return"})
    key = "return_id"
    key_columns = ("return_id",)

    def key_of(self, recorded: RecordedEvent, event: DomainEvent) -> str:
        """Returns are keyed by the id in their stream name."""
        return m.return_id_of(recorded)

    def evolve(
        self, row: dict[str, Any] | None, recorded: RecordedEvent, event: DomainEvent
    ) -> dict[str, Any]:
        """See ``models.evolve_return``."""
        return m.evolve_return(row, recorded, event)


class DailyReturnsProjection(Projection):
    """``daily_returns``: returns opened (and units), expired, cancelled and refunded
    (and cents) per UTC day."""

    name = "daily_returns"
    tables = ("daily_returns",)
    stream_types = frozenset({"Return"})

    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        """Sum the batch per day, then add the sums in one statement."""
        days: dict[date, m.DayReturns] = {}
        for recorded, event in pairs:
            m.returns_delta(days, recorded, event)
        if not days:
            return
        query = sql.SQL(
            """
            INSERT INTO {t} AS t (day, opened, units, expired, cancelled, refunded,
                                  refunded_cents)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (day) DO UPDATE SET
                opened = t.opened + EXCLUDED.opened,
                units = t.units + EXCLUDED.units,
                expired = t.expired + EXCLUDED.expired,
                cancelled = t.cancelled + EXCLUDED.cancelled,
                refunded = t.refunded + EXCLUDED.refunded,
                refunded_cents = t.refunded_cents + EXCLUDED.refunded_cents
            """
        ).format(t=_t(tables, "daily_returns"))
        async with conn.cursor() as cur:
            await cur.executemany(
                query,
                [
                    (d, r.opened, r.units, r.expired, r.cancelled, r.refunded, r.refunded_cents)
                    for d, r in sorted(days.items())
                ],
            )


def default_projections() -> list[Projection]:
    """Every read model sagaflow maintains, in the order they apply within a batch."""
    return [
        OrderSummaryProjection(),
        CustomerOrdersProjection(),
        InventoryLevelsProjection(),
        DailySalesProjection(),
        ProductSalesProjection(),
        SagaOutcomesProjection(),
        ReturnSummaryProjection(),
        DailyReturnsProjection(),
    ]


def projection_named(name: str, projections: Sequence[Projection] | None = None) -> Projection:
    """The projection called ``name``; ValueError lists the known ones."""
    known = {p.name: p for p in projections or default_projections()}
    try:
        return known[name]
    except KeyError:
        raise ValueError(f"unknown read model {name!r}; known: {', '.join(known)}") from None
