"""A synthetic, deterministic order workload for streaming tests and the benchmark.

Each order writes its whole life to the store the way the saga does: order,
payment, inventory, saga and notification streams, with some orders cancelled
(refund, reservation released, saga compensated) and some sagas parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from domain import events as ev
from domain import saga_events as sev
from domain.events import DomainEvent
from eventstore.base import EventStore
from eventstore.envelope import ANY_VERSION, NO_STREAM, NewEvent


def _new(events: Sequence[DomainEvent]) -> list[NewEvent]:
    return [NewEvent(e) for e in events]


async def register_products(store: EventStore, skus: Sequence[str], stock: int = 1_000_000) -> int:
    """Register each SKU with plenty of stock; returns the events written."""
    for i, sku in enumerate(skus):
        await store.append(
            ev.inventory_stream(sku),
            _new(
                [
                    ev.ProductRegistered(sku=sku, name=f"Product {sku}", unit_price_cents=100 + i),
                    ev.StockAdded(quantity=stock),
                ]
            ),
            NO_STREAM,
            stream_type="Inventory",
        )
    return 2 * len(skus)


async def run_order(
    store: EventStore, order_id: str, skus: Sequence[str], rng: random.Random
) -> int:
    """One order's life across its streams; returns the events written."""
    order = ev.order_stream(order_id)
    saga = sev.saga_stream(order_id)
    written = 0

    async def put(stream: str, stream_type: str, events: list[DomainEvent], exp: int) -> None:
        nonlocal written
        await store.append(stream, _new(events), exp, stream_type=stream_type)
        written += len(events)

    lines = [(sku, rng.randint(1, 3)) for sku in rng.sample(list(skus), k=min(2, len(skus)))]
    prices = {sku: 100 + list(skus).index(sku) for sku in skus}
    total = sum(q * prices[s] for s, q in lines)
    await put(
        saga,
        "Saga",
        [sev.SagaStarted(saga_id=order_id, saga_type="order", order_id=order_id)],
        NO_STREAM,
    )
    items: list[DomainEvent] = [
        ev.OrderCreated(order_id=order_id, customer_id=f"c{rng.randint(1, 20)}")
    ]
    items += [
        ev.OrderItemAdded(sku=s, name=f"Product {s}", quantity=q, unit_price_cents=prices[s])
        for s, q in lines
    ]
    items.append(ev.OrderSubmitted(total_cents=total))
    await put(order, "Order", items, NO_STREAM)
    for n, (sku, q) in enumerate(lines):
        await put(
            ev.inventory_stream(sku),
            "Inventory",
            [ev.StockReserved(reservation_id=f"{order_id}-{n}", order_id=order_id, quantity=q)],
            ANY_VERSION,
        )
    pay = f"pay-{order_id}"
    await put(
        ev.payment_stream(order_id),
        "Payment",
        [ev.PaymentCharged(payment_id=pay, order_id=order_id, amount_cents=total)],
        NO_STREAM,
    )
    version = len(items)
    fate = rng.random()
    if fate < 0.15:  # cancelled after payment: compensate
        await put(order, "Order", [ev.OrderCancelled(reason="out of luck")], version)
        await put(
            ev.payment_stream(order_id),
            "Payment",
            [ev.PaymentRefunded(payment_id=pay, amount_cents=total, reason="cancelled")],
            1,
        )
        for n, (sku, q) in enumerate(lines):
            await put(
                ev.inventory_stream(sku),
                "Inventory",
                [
                    ev.StockReservationReleased(
                        reservation_id=f"{order_id}-{n}", order_id=order_id, quantity=q
                    )
                ],
                ANY_VERSION,
            )
        outcome: list[DomainEvent] = [
            sev.SagaCompensated(saga_id=order_id, reason="cancelled", compensated_steps=["pay"])
        ]
        if fate < 0.03:
            outcome.insert(
                0, sev.CompensationParked(saga_id=order_id, step="release", error="timeout")
            )
        await put(saga, "Saga", outcome, 1)
        return written
    await put(
        order,
        "Order",
        [
            ev.PaymentReceived(payment_id=pay, amount_cents=total),
            ev.OrderShipped(tracking_number=f"T{order_id}", carrier="dhl"),
        ],
        version,
    )
    for n, (sku, q) in enumerate(lines):
        await put(
            ev.inventory_stream(sku),
            "Inventory",
            [ev.StockSold(reservation_id=f"{order_id}-{n}", order_id=order_id, quantity=q)],
            ANY_VERSION,
        )
    await put(order, "Order", [ev.OrderDelivered()], version + 2)
    await put(saga, "Saga", [sev.SagaCompleted(saga_id=order_id)], 1)
    return written


async def run_orders(
    store: EventStore,
    count: int,
    *,
    prefix: str,
    skus: Sequence[str],
    seed: int = 7,
    concurrency: int = 8,
) -> int:
    """``count`` orders, ``concurrency`` at a time; returns the events written."""
    rng = random.Random(seed)
    seeds = [rng.random() for _ in range(count)]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with sem:
            return await run_order(store, f"{prefix}{i}", skus, random.Random(seeds[i]))

    return sum(await asyncio.gather(*(one(i) for i in range(count))))


@contextlib.asynccontextmanager
async def background(
    work: Callable[[asyncio.Event], Awaitable[object]],
) -> AsyncIterator[asyncio.Task[object]]:
    """Run ``work(stop)`` as a task for the block; stop it and surface its errors after."""
    stop = asyncio.Event()
    task: asyncio.Task[object] = asyncio.create_task(work(stop))  # type: ignore[arg-type]
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        except TimeoutError:
            task.cancel()
            raise


async def wait_for(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float = 60.0,
    interval_s: float = 0.1,
    what: str = "condition",
    watch: asyncio.Task[object] | None = None,
) -> None:
    """Poll ``condition`` until true; fail with ``what`` on timeout or if ``watch`` died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await condition():
        if watch is not None and watch.done():
            watch.result()  # raises the task's error
            raise AssertionError(f"background task ended before {what}")
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
