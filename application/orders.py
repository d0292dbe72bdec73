"""Order use cases: place an order (start its saga), steer it, read it back.

Placing checks the command's shape first with no I/O at all, then looks up every
SKU in one batched read, and only then writes (the idempotency key, the saga, the
SagaStarted event): a refused request writes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowHandle

from application.catalogue import Catalogue
from application.context import Context
from application.errors import (
    IdempotencyKeyReused,
    InvalidConsistencyToken,
    NotFound,
    NotVisibleYet,
    Refused,
)
from domain.commands import OrderLine, PlaceOrder, require_known_skus, validate_place_order
from domain.events import order_stream
from domain.saga_events import saga_stream
from eventstore import (
    ANY_VERSION,
    DuplicateEventConflict,
    EventStore,
    InvalidStreamId,
    NewEvent,
    deterministic_event_id,
)
from eventstore.envelope import check_stream_id
from projections import queries
from sagaflow.settings import Settings
from workflows import client as sagas
from workflows.journal import saga_event
from workflows.models import (
    ORDER_SAGA,
    LineInput,
    OrderSagaInput,
    OrderSagaResult,
    SagaOptions,
    SagaRecord,
)
from workflows.order_saga import ORDER, OrderSagaWorkflow
from workflows.visibility import input_keys

IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c1d3e-8a44-4d53-9a3c-5a0e3f4d2b10")
"""Order ids derived from Idempotency-Keys: ``uuid5(IDEMPOTENCY_NAMESPACE, key)``."""

Admit = Callable[[], Awaitable[None]]
"""A gate run after the shape check and before any write (the API's backpressure)."""


def request_hash(payload: Any) -> str:
    """A stable hash of a request body (key order and spacing do not matter)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ConsistencyToken:
    """Where a write landed: ``<global_position>~<stream_id>~<version>`` (URL safe)."""

    @staticmethod
    def encode(global_position: int, stream_id: str, version: int) -> str:
        """The token the client passes back to read its own write."""
        return f"{global_position}~{stream_id}~{version}"

    @staticmethod
    def decode(token: str) -> tuple[int, str, int]:
        """Parse a token; InvalidConsistencyToken when malformed."""
        parts = token.split("~")
        if len(parts) != 3 or not (_is_number(parts[0]) and _is_number(parts[2])):
            raise InvalidConsistencyToken(token)
        try:
            # Why check the stream id here: it goes into a query, and a NUL in it was a
            # 500 from PostgreSQL (schemathesis); every malformed token must be a 422.
            check_stream_id(parts[1])
        except InvalidStreamId:
            raise InvalidConsistencyToken(token) from None
        return int(parts[0]), parts[1], int(parts[2])


def _is_number(text: str) -> bool:
    """ASCII digits, at most 19 (a bigint; the API's TOKEN_PATTERN says the same).

    ``str.isdigit`` alone also takes "²", which ``int()`` then refuses.
    """
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()


@dataclass(frozen=True)
class OrderPlaced:
    """An accepted order: its id and the token that reads the write back."""

    order_id: str
    consistency_token: str


def saga_input(
    cmd: PlaceOrder, settings: Settings, *, user_id: str = "", options: SagaOptions | None = None
) -> OrderSagaInput:
    """The saga workflow's input for a validated ``cmd``."""
    return OrderSagaInput(
        order_id=cmd.order_id,
        customer_id=cmd.customer_id,
        lines=[LineInput(line.sku, line.quantity) for line in cmd.lines],
        options=options or sagas.saga_options(settings),
        user_id=user_id,
    )


async def validate_order(cmd: PlaceOrder, settings: Settings, store: EventStore) -> None:
    """Raise InvalidCommand for a bad ``cmd``: shape first (no I/O), then one catalogue read."""
    validate_place_order(
        cmd, max_lines=settings.order_max_lines, max_units=settings.order_max_units
    )
    require_known_skus(cmd, await Catalogue(store).known_skus(line.sku for line in cmd.lines))


async def start_order(
    client: Client,
    settings: Settings,
    cmd: PlaceOrder,
    *,
    store: EventStore,
    user_id: str = "",
    task_queue: str | None = None,
    options: SagaOptions | None = None,
) -> WorkflowHandle[OrderSagaWorkflow, OrderSagaResult]:
    """Validate ``cmd`` and start its saga (workflow id = order id); idempotent.

    Raises InvalidCommand (one message per problem) before anything starts. An order
    id that already has a saga, running or finished, gets that saga's handle.
    """
    await validate_order(cmd, settings, store)
    return await sagas.start_order_saga(
        client,
        settings,
        saga_input(cmd, settings, user_id=user_id, options=options),
        task_queue=task_queue,
    )


async def place_order(
    ctx: Context,
    customer_id: str,
    lines: Sequence[tuple[str, int]],
    *,
    idempotency_key: str | None = None,
    user_id: str = "",
    admit: Admit | None = None,
) -> OrderPlaced:
    """Validate, claim the idempotency key, start the saga, return a consistency token.

    With a key, the order id is derived from it, so concurrent retries converge on
    one workflow; the stored body hash refuses a reused key with another body.
    """
    if idempotency_key:
        order_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))
    else:
        order_id = str(uuid.uuid4())
    cmd = PlaceOrder(
        order_id=order_id,
        customer_id=customer_id,
        lines=[OrderLine(sku=sku, quantity=quantity) for sku, quantity in lines],
    )
    validate_place_order(
        cmd, max_lines=ctx.settings.order_max_lines, max_units=ctx.settings.order_max_units
    )
    if admit is not None:
        await admit()
    client = ctx.require_temporal()
    require_known_skus(cmd, await Catalogue(ctx.store).known_skus(sku for sku, _ in lines))
    claimed = False
    if idempotency_key:
        body = {"customer_id": customer_id, "lines": [list(line) for line in lines]}
        claimed = await claim_idempotency_key(ctx, idempotency_key, request_hash(body), order_id)
    order_input = saga_input(cmd, ctx.settings, user_id=user_id)
    try:
        await sagas.start_order_saga(client, ctx.settings, order_input)
    except Exception:
        if claimed:
            # Nothing started: free the key so a corrected retry may use it.
            await release_idempotency_key(ctx, idempotency_key or "")
        raise
    token = await saga_started_token(
        ctx.store,
        saga_id=order_id,
        saga_type=ORDER_SAGA,
        keys=input_keys(ORDER, order_input),
        order_id=order_id,
        user_id=user_id,
    )
    return OrderPlaced(order_id=order_id, consistency_token=token)


async def claim_idempotency_key(ctx: Context, key: str, body_hash: str, order_id: str) -> bool:
    """Claim ``key`` for a resource; False when already claimed with the same body
    (a retry), IdempotencyKeyReused when claimed with another."""
    async with ctx.pool.connection() as conn:
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
        raise IdempotencyKeyReused()
    return False


async def release_idempotency_key(ctx: Context, key: str) -> None:
    """Free a claimed key (nothing started under it)."""
    async with ctx.pool.connection() as conn:
        await conn.execute("DELETE FROM api_idempotency_keys WHERE key = %s", (key,))


async def saga_started_token(
    store: EventStore,
    *,
    saga_id: str,
    saga_type: str,
    keys: dict[str, str],
    order_id: str | None = None,
    user_id: str = "",
) -> str:
    """Append the saga's SagaStarted (a no-op when the journal was first) and return
    the consistency token of that write."""
    # Why SagaStarted is appended here too: the client needs a store position at
    # once. The event id is the one the saga's journal uses (workflow id,
    # "journal", seq 1), so whichever append comes second is a no-op; the data is
    # the journal's own (same keys), so the read model is the same either way.
    event = saga_event(
        SagaRecord(
            saga_id=saga_id,
            saga_type=saga_type,
            kind="SagaStarted",
            seq=1,
            order_id=order_id,
            keys=keys,
        )
    )
    try:
        result = await store.append(
            saga_stream(saga_id),
            [
                NewEvent(
                    event,
                    event_id=deterministic_event_id(saga_id, "journal", 1),
                    metadata={
                        "correlation_id": saga_id,
                        "causation_id": "api",
                        "user_id": user_id,
                        "workflow_id": saga_id,
                        "activity_id": "",
                    },
                )
            ],
            ANY_VERSION,
            stream_type="Saga",
        )
    except DuplicateEventConflict:
        # The id already names a saga started with other business keys (a saga type
        # whose id comes from its input, e.g. a trip id used twice): the request
        # attached to that saga, so answering 202 would claim a start that never was.
        raise Refused(
            f"saga {saga_id!r} ({saga_type}) already exists with other input; "
            "nothing new was started"
        ) from None
    return ConsistencyToken.encode(
        result.global_positions[0], saga_stream(saga_id), result.first_version
    )


# --- steering the saga ------------------------------------------------------------------


async def steer(order_id: str, call: Awaitable[str]) -> dict[str, str]:
    """Await a saga update; NotFound / Refused instead of the Temporal client's errors."""
    try:
        result = await call
    except sagas.OrderNotFound:
        raise NotFound("order", order_id) from None
    except sagas.OrderRequestRefused as exc:
        raise Refused(str(exc)) from None
    return {"order_id": order_id, "result": result}


async def cancel_order(ctx: Context, order_id: str, reason: str) -> dict[str, str]:
    """Cancel before shipping: the saga compensates; refused after shipping."""
    return await steer(order_id, sagas.cancel_order(ctx.require_temporal(), order_id, reason))


async def ship_order(
    ctx: Context, order_id: str, tracking_number: str, carrier: str
) -> dict[str, str]:
    """Record the shipment of a confirmed order."""
    client = ctx.require_temporal()
    return await steer(order_id, sagas.ship_order(client, order_id, tracking_number, carrier))


async def deliver_order(ctx: Context, order_id: str) -> dict[str, str]:
    """Record the delivery of a shipped order."""
    return await steer(order_id, sagas.deliver_order(ctx.require_temporal(), order_id))


# --- reads ----------------------------------------------------------------------------------

Summaries = Callable[[str], Awaitable[str | None]]
"""Fetches one order summary as JSON text (the API passes its coalesced reader)."""


async def order_summary(
    ctx: Context,
    order_id: str,
    consistency_token: str | None = None,
    *,
    summaries: Summaries | None = None,
) -> tuple[str, bool]:
    """The summary as JSON text (or the saga's pending state), and whether the token
    was reached; NotVisibleYet when it was not and nothing is there yet."""
    reached = True
    if consistency_token:
        _, stream_id, version = ConsistencyToken.decode(consistency_token)
        reached = await wait_for_write(ctx, stream_id, version, consistency_token)
    if summaries is None:
        summary = (await queries.order_summaries_json(ctx.pool, [order_id])).get(order_id)
    else:
        summary = await summaries(order_id)
    if summary is not None:
        if '"cancelled"' in summary:
            # Rare, so the hot path stays PostgreSQL's text: say why and what was undone.
            outcome = await queries.get_saga_outcome(ctx.pool, order_id)
            if outcome is not None:
                explained = {**json.loads(summary), **await explain(ctx, outcome)}
                return json.dumps(explained, separators=(",", ":"), default=str), reached
        return summary, reached
    outcome = await queries.get_saga_outcome(ctx.pool, order_id)
    if outcome is not None:
        # The saga has not created the order (yet, or ever): say what happened, not 404.
        # (The shape of api.models.PendingOrder.)
        pending: dict[str, Any] = {
            "order_id": order_id,
            "status": "pending" if outcome.status == "running" else "rejected",
            "saga_status": outcome.status,
        }
        if outcome.status != "running":
            pending.update(await explain(ctx, outcome))
        return json.dumps(pending, separators=(",", ":")), reached
    if not reached:
        raise NotVisibleYet("order", order_id, ctx.settings.consistency_wait_max_s)
    raise NotFound("order", order_id)


async def explain(ctx: Context, outcome: queries.SagaOutcome) -> dict[str, Any]:
    """What happened to an order that did not go through: ``outcome`` (rejected,
    cancelled, compensated, or still compensating / parked), ``failure`` (why, in
    the words of the step that failed) and ``undone`` (the steps compensated)."""
    journal = await ctx.store.read_stream(saga_stream(outcome.saga_id))
    undone: list[str] = []
    reason = outcome.reason or ""
    for recorded in journal:
        event = ctx.store.decode(recorded)
        if type(event).__name__ == "SagaCompensated":
            undone = list(getattr(event, "compensated_steps", []))
            reason = getattr(event, "reason", reason)
    created = any(step == "create_order" for step in undone)
    if reason.startswith("cancelled"):
        what = "cancelled"
    elif outcome.status == "compensated":
        what = "compensated" if created else "rejected"
    else:
        what = outcome.status  # compensating, compensation_parked
    return {
        "outcome": what,
        "failure": outcome.failure or reason or None,
        "undone": undone,
        "parked_steps": list(outcome.parked_steps),
    }


async def wait_for_write(ctx: Context, stream_id: str, version: int, token: str = "") -> bool:
    """Wait (bounded by settings) until a read model has applied ``stream_id`` at ``version``.

    InvalidConsistencyToken (at once, no wait) when the store holds no such write: a
    token this service handed out always names a committed write.
    """
    deadline = time.monotonic() + ctx.settings.consistency_wait_max_s
    delay = 0.01
    checked = False
    while True:
        applied = await queries.applied_version(ctx.pool, stream_id)
        if applied is not None and applied >= version:
            return True
        if not checked:
            # Why once, after the first miss: the hot path (the read model has the
            # write) costs no store read; a forged or stale-made-up token would
            # otherwise hold a connection for the whole wait (schemathesis sent
            # thousands, each 5 s).
            checked = True
            if await ctx.store.stream_version(stream_id) < version:
                raise InvalidConsistencyToken(token, "names a write that was never made")
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def order_events(ctx: Context, order_id: str) -> list[dict[str, Any]]:
    """The order stream's events with their envelopes, oldest first."""
    events = await ctx.store.read_stream(order_stream(order_id))
    if not events:
        # Why look at the saga's stream: an order accepted (202, its SagaStarted
        # written) has no facts until the saga's create step runs; it exists, with
        # no events yet, rather than "not found".
        started = await ctx.store.read_stream(saga_stream(order_id))
        if not started or started[0].data.get("saga_type") != ORDER_SAGA:
            raise NotFound("order", order_id)
    return [e.envelope() for e in events]


async def saga_state(ctx: Context, order_id: str) -> dict[str, Any]:
    """The saga's live state (its workflow query)."""
    try:
        status = await sagas.get_status(ctx.require_temporal(), order_id)
    except sagas.OrderNotFound:
        raise NotFound("order", order_id) from None
    except sagas.OrderRequestRefused as exc:
        raise Refused(str(exc)) from None
    return dataclasses.asdict(status)


async def customer_orders(ctx: Context, customer_id: str, limit: int) -> list[dict[str, Any]]:
    """A customer's orders, newest first."""
    rows = await queries.list_customer_orders(ctx.pool, customer_id, limit=limit)
    return [r.model_dump(mode="json") for r in rows]
