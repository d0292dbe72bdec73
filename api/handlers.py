"""Command and query handlers: the use cases behind the routes.

Handlers get their dependencies from the ``Container`` built once per process in the
API's lifespan; they raise domain errors or ``ApiError`` and never touch HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from activities.saga_journal import saga_event
from api.bus import Bus, Handler
from api.coalesce import Coalescer
from api.container import Container
from api.errors import ApiError, not_found
from api.messages import (
    COMMANDS,
    QUERIES,
    CancelOrderCommand,
    CustomerOrdersQuery,
    DailySalesQuery,
    DeadLettersQuery,
    DeliverOrderCommand,
    InventoryQuery,
    OrderEventsQuery,
    OrderSummaryQuery,
    ParkedSagasQuery,
    PlaceOrderCommand,
    ProductQuery,
    ProductSalesQuery,
    RegisterProductCommand,
    ReplayDeadLetterCommand,
    ResolveCompensationCommand,
    RestockCommand,
    RetryCompensationCommand,
    SagaOutcomesQuery,
    SagaStateQuery,
    ShipOrderCommand,
    SkipDeadLetterCommand,
)
from api.models import OrderAccepted, PendingOrder
from domain.commands import RegisterProduct, Restock
from domain.events import order_stream
from domain.saga_events import saga_stream
from eventstore import ANY_VERSION, NewEvent, deterministic_event_id
from projections import deadletters, queries
from workflows import client as sagas
from workflows.models import ORDER_SAGA, SagaRecord

IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c1d3e-8a44-4d53-9a3c-5a0e3f4d2b10")


def request_hash(payload: Any) -> str:
    """A stable hash of a request body (key order and spacing do not matter)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ConsistencyToken:
    """Where a write landed: ``<global_position>.<stream_id>.<version>`` (base-16 safe)."""

    @staticmethod
    def encode(global_position: int, stream_id: str, version: int) -> str:
        """The token the client passes back to read its own write."""
        return f"{global_position}~{stream_id}~{version}"

    @staticmethod
    def decode(token: str) -> tuple[int, str, int]:
        """Parse a token; ApiError 422 when malformed."""
        parts = token.split("~")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit() or not parts[1]:
            raise ApiError(422, "invalid consistency token", f"{token[:80]!r} is not a token")
        return int(parts[0]), parts[1], int(parts[2])


class Handlers:
    """Every command and query handler of the API."""

    def __init__(self, container: Container) -> None:
        self.c = container
        # The hottest read: concurrent summary reads share one query per loop turn.
        self._summaries: Coalescer[str, str] = Coalescer(self._fetch_summaries)

    def register(self, commands: Bus, queries_bus: Bus) -> None:
        """Register each handler on its bus and check none is missing."""
        command_handlers: list[tuple[type, Handler]] = [
            (PlaceOrderCommand, self.place_order),
            (CancelOrderCommand, self.cancel_order),
            (ShipOrderCommand, self.ship_order),
            (DeliverOrderCommand, self.deliver_order),
            (RetryCompensationCommand, self.retry_compensation),
            (ResolveCompensationCommand, self.resolve_compensation),
            (RegisterProductCommand, self.register_product),
            (RestockCommand, self.restock),
            (ReplayDeadLetterCommand, self.replay_dead_letter),
            (SkipDeadLetterCommand, self.skip_dead_letter),
        ]
        query_handlers: list[tuple[type, Handler]] = [
            (OrderSummaryQuery, self.order_summary),
            (OrderEventsQuery, self.order_events),
            (SagaStateQuery, self.saga_state),
            (CustomerOrdersQuery, self.customer_orders),
            (ProductQuery, self.product),
            (InventoryQuery, self.inventory),
            (DailySalesQuery, self.daily_sales),
            (ProductSalesQuery, self.product_sales),
            (SagaOutcomesQuery, self.saga_outcomes),
            (ParkedSagasQuery, self.parked_sagas),
            (DeadLettersQuery, self.dead_letters),
        ]
        for command, handler in command_handlers:
            commands.register(command, handler)
        for query, handler in query_handlers:
            queries_bus.register(query, handler)
        commands.check(COMMANDS)
        queries_bus.check(QUERIES)

    # --- orders -----------------------------------------------------------------------

    async def place_order(self, cmd: PlaceOrderCommand) -> OrderAccepted:
        """Validate, claim the idempotency key, start the saga, return a token.

        With a key, the order id is derived from it, so concurrent retries converge
        on one workflow; the stored body hash refuses a reused key with another body.
        """
        await self.c.backpressure.check()
        body = {"customer_id": cmd.customer_id, "lines": [list(line) for line in cmd.lines]}
        claimed = False
        if cmd.idempotency_key:
            order_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, cmd.idempotency_key))
            claimed = await self._claim_key(cmd.idempotency_key, request_hash(body), order_id)
        else:
            order_id = str(uuid.uuid4())
        client = self.c.require_temporal()
        try:
            await sagas.start_order(
                client,
                self.c.settings,
                cmd.to_domain(order_id),
                store=self.c.store,
                user_id=cmd.user_id,
            )
        except Exception:
            if claimed:
                # Nothing started: free the key so a corrected retry may use it.
                await self._release_key(cmd.idempotency_key or "")
            raise
        token = await self._saga_started_token(order_id, cmd.user_id)
        self.c.metrics.orders_accepted.inc()
        return OrderAccepted(
            order_id=order_id, consistency_token=token, location=f"/orders/{order_id}"
        )

    async def _claim_key(self, key: str, body_hash: str, order_id: str) -> bool:
        async with self.c.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO api_idempotency_keys (key, request_hash, resource_id) "
                "VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
                (key, body_hash, order_id),
            )
            if await cur.fetchone():
                return True
            cur = await conn.execute(
                "SELECT request_hash FROM api_idempotency_keys WHERE key = %s", (key,)
            )
            row = await cur.fetchone()
        if row is not None and row[0] != body_hash:
            raise ApiError(
                409,
                "idempotency key reused",
                "this Idempotency-Key was used with a different request body",
            )
        return False

    async def _release_key(self, key: str) -> None:
        async with self.c.pool.connection() as conn:
            await conn.execute("DELETE FROM api_idempotency_keys WHERE key = %s", (key,))

    async def _saga_started_token(self, order_id: str, user_id: str) -> str:
        # Why the API appends SagaStarted too: the client needs a store position at
        # once. The event id is the one the saga's journal uses (workflow id,
        # "journal", seq 1), so whichever append comes second is a no-op.
        event = saga_event(
            SagaRecord(
                saga_id=order_id, saga_type=ORDER_SAGA, kind="SagaStarted", seq=1, order_id=order_id
            )
        )
        result = await self.c.store.append(
            saga_stream(order_id),
            [
                NewEvent(
                    event,
                    event_id=deterministic_event_id(order_id, "journal", 1),
                    metadata={
                        "correlation_id": order_id,
                        "causation_id": "api",
                        "user_id": user_id,
                        "workflow_id": order_id,
                        "activity_id": "",
                    },
                )
            ],
            ANY_VERSION,
            stream_type="Saga",
        )
        return ConsistencyToken.encode(
            result.global_positions[0], saga_stream(order_id), result.first_version
        )

    async def _saga_call(self, order_id: str, call: Any) -> dict[str, str]:
        try:
            result = await call
        except sagas.OrderNotFound:
            raise not_found("order", order_id) from None
        except sagas.OrderRequestRefused as exc:
            raise ApiError(409, "refused", str(exc)) from None
        return {"order_id": order_id, "result": str(result)}

    async def cancel_order(self, cmd: CancelOrderCommand) -> dict[str, str]:
        """Signal the saga to cancel (compensate) before shipping."""
        client = self.c.require_temporal()
        return await self._saga_call(
            cmd.order_id, sagas.cancel_order(client, cmd.order_id, cmd.reason)
        )

    async def ship_order(self, cmd: ShipOrderCommand) -> dict[str, str]:
        """Signal the saga that the order shipped."""
        client = self.c.require_temporal()
        return await self._saga_call(
            cmd.order_id,
            sagas.ship_order(client, cmd.order_id, cmd.tracking_number, cmd.carrier),
        )

    async def deliver_order(self, cmd: DeliverOrderCommand) -> dict[str, str]:
        """Signal the saga that the order was delivered."""
        client = self.c.require_temporal()
        return await self._saga_call(cmd.order_id, sagas.deliver_order(client, cmd.order_id))

    async def retry_compensation(self, cmd: RetryCompensationCommand) -> dict[str, str]:
        """Retry a parked compensation."""
        client = self.c.require_temporal()
        return await self._saga_call(
            cmd.order_id, sagas.retry_compensation(client, cmd.order_id, cmd.step, cmd.note)
        )

    async def resolve_compensation(self, cmd: ResolveCompensationCommand) -> dict[str, str]:
        """Resolve a parked compensation by hand."""
        client = self.c.require_temporal()
        return await self._saga_call(
            cmd.order_id, sagas.resolve_compensation(client, cmd.order_id, cmd.step, cmd.note)
        )

    async def order_summary(self, q: OrderSummaryQuery) -> tuple[str, bool]:
        """The summary as JSON text (or the saga's pending state), and whether the token
        was reached. Why JSON text: PostgreSQL renders the row, so the hottest read
        skips building and re-serialising Python objects."""
        reached = True
        if q.consistency_token:
            _, stream_id, version = ConsistencyToken.decode(q.consistency_token)
            reached = await self._wait_for(stream_id, version)
        summary = await self._summaries.get(q.order_id)
        if summary is not None:
            return summary, reached
        outcome = await queries.get_saga_outcome(self.c.pool, q.order_id)
        if outcome is not None:
            # The saga runs but has not created the order yet: say so, not 404.
            pending = PendingOrder(order_id=q.order_id, saga_status=outcome.status)
            return pending.model_dump_json(), reached
        if not reached:
            raise ApiError(
                404,
                "not visible yet",
                f"order {q.order_id!r} is not in the read model yet: the projection has not "
                f"reached your consistency token within {self.c.settings.consistency_wait_max_s}s",
            )
        raise not_found("order", q.order_id)

    async def _fetch_summaries(self, order_ids: Sequence[str]) -> dict[str, str]:
        async with self.c.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT order_id, to_jsonb(o)::text FROM order_summary o WHERE order_id = ANY(%s)",
                (list(order_ids),),
            )
            return {str(row[0]): str(row[1]) for row in await cur.fetchall()}

    async def _wait_for(self, stream_id: str, version: int) -> bool:
        """Wait (bounded) until a read model has applied ``stream_id`` at ``version``."""
        deadline = time.monotonic() + self.c.settings.consistency_wait_max_s
        delay = 0.01
        while True:
            async with self.c.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT max(version) FROM projection_watermarks WHERE stream_id = %s",
                    (stream_id,),
                )
                row = await cur.fetchone()
            if row is not None and row[0] is not None and row[0] >= version:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def order_events(self, q: OrderEventsQuery) -> list[dict[str, Any]]:
        """The order stream's events with their envelopes."""
        events = await self.c.store.read_stream(order_stream(q.order_id))
        if not events:
            raise not_found("order", q.order_id)
        return [e.envelope() for e in events]

    async def saga_state(self, q: SagaStateQuery) -> dict[str, Any]:
        """The saga's live state (its workflow query)."""
        client = self.c.require_temporal()
        try:
            status = await sagas.get_status(client, q.order_id)
        except sagas.OrderNotFound:
            raise not_found("order", q.order_id) from None
        except sagas.OrderRequestRefused as exc:
            raise ApiError(409, "refused", str(exc)) from None
        return dataclasses.asdict(status)

    async def customer_orders(self, q: CustomerOrdersQuery) -> list[dict[str, Any]]:
        """A customer's orders."""
        rows = await queries.list_customer_orders(self.c.pool, q.customer_id, limit=q.limit)
        return [r.model_dump(mode="json") for r in rows]

    # --- catalogue ----------------------------------------------------------------------

    async def register_product(self, cmd: RegisterProductCommand) -> dict[str, Any]:
        """Add a SKU to the catalogue."""
        product = await sagas.register_product(
            self.c.store,
            RegisterProduct(sku=cmd.sku, name=cmd.name, unit_price_cents=cmd.unit_price_cents),
            user_id=cmd.user_id,
        )
        return dataclasses.asdict(product)

    async def restock(self, cmd: RestockCommand) -> dict[str, Any]:
        """Add units of a SKU."""
        if not await sagas.products(self.c.store, [cmd.sku]):
            raise not_found("product", cmd.sku)
        product = await sagas.restock(
            self.c.store,
            Restock(sku=cmd.sku, quantity=cmd.quantity),
            idempotency_key=cmd.idempotency_key,
            user_id=cmd.user_id,
        )
        return dataclasses.asdict(product)

    async def product(self, q: ProductQuery) -> dict[str, Any]:
        """A catalogue entry, from the event store (always current)."""
        found = await sagas.products(self.c.store, [q.sku])
        if not found:
            raise not_found("product", q.sku)
        return dataclasses.asdict(found[0])

    async def inventory(self, q: InventoryQuery) -> dict[str, Any]:
        """The inventory read model of one SKU."""
        level = await queries.get_inventory_level(self.c.pool, q.sku)
        if level is None:
            raise not_found("inventory", q.sku)
        return level.model_dump(mode="json")

    # --- analytics and operations -----------------------------------------------------------

    async def daily_sales(self, q: DailySalesQuery) -> list[dict[str, Any]]:
        """Sales per day (the newest ``limit`` days)."""
        rows = await queries.daily_sales(self.c.pool)
        return [r.model_dump(mode="json") for r in rows[-q.limit :]]

    async def product_sales(self, q: ProductSalesQuery) -> list[dict[str, Any]]:
        """Units and revenue per product."""
        rows = await queries.product_sales(self.c.pool, limit=q.limit)
        return [r.model_dump(mode="json") for r in rows]

    async def saga_outcomes(self, _: SagaOutcomesQuery) -> list[dict[str, Any]]:
        """Saga outcome counts per saga type."""
        return [r.model_dump(mode="json") for r in await queries.saga_outcome_counts(self.c.pool)]

    async def parked_sagas(self, q: ParkedSagasQuery) -> list[dict[str, Any]]:
        """Sagas with a parked compensation."""
        rows = await queries.list_saga_outcomes(self.c.pool, status="parked", limit=q.limit)
        return [r.model_dump(mode="json") for r in rows]

    async def dead_letters(self, q: DeadLettersQuery) -> list[dict[str, Any]]:
        """Dead letters of the projector."""
        rows = await deadletters.list_dead_letters(self.c.pool, status=q.status)
        return [_jsonable(dataclasses.asdict(r)) for r in rows]

    async def replay_dead_letter(self, cmd: ReplayDeadLetterCommand) -> dict[str, Any]:
        """Replay one dead letter."""
        return await self._resolve(cmd.dead_letter_id, replay=True)

    async def skip_dead_letter(self, cmd: SkipDeadLetterCommand) -> dict[str, Any]:
        """Skip one dead letter."""
        return await self._resolve(cmd.dead_letter_id, replay=False)

    async def _resolve(self, dead_letter_id: int, *, replay: bool) -> dict[str, Any]:
        from projections.handlers import default_projections

        action = deadletters.replay_dead_letter if replay else deadletters.skip_dead_letter
        try:
            resolution = await action(
                self.c.pool, dead_letter_id, default_projections(), self.c.store.upcasters
            )
        except deadletters.DeadLetterError as exc:
            message = str(exc)
            if message.startswith("no dead letter"):
                raise not_found("dead letter", str(dead_letter_id)) from None
            raise ApiError(409, "dead letter not resolved", message) from None
        return dataclasses.asdict(resolution)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
