"""A cancel that lands while the workflow task running a local step is lost.

The worker runs ``create_order`` as a local activity: its commit is in the store
before the workflow task that ran it completes. If the worker dies then, Temporal
retries the task from the history before it; a cancel that arrived meanwhile is
delivered in that retried task. The saga must not stop before ``create_order`` (the
lost task already ran it): it must still cancel the order it cannot see in its
history. Found by the worker-kill scenario (an order refunded but left live).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from bench.reliability.harness import Harness, key_whose_order, order_body, register_products
from bench.reliability.oracle import check_ledger, scenario_events

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(180)]

HANG = {"SAGAFLOW_FAULT_HANG_AFTER_COMMIT": "create_order"}
OFF = {"SAGAFLOW_FAULT_HANG_AFTER_COMMIT": ""}
T = TypeVar("T")


async def _wait_for(predicate: Callable[[], Awaitable[T | None]], within_s: float, what: str) -> T:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value is not None:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within_s} s: {what}")


async def test_a_cancel_during_a_lost_local_step_still_undoes_that_step(harness: Harness) -> None:
    h = harness
    sku = f"LOST-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(h.restart_process, "worker", HANG)
    store = await h.store()
    try:
        async with h.http() as http:
            await register_products(http, [sku], stock=10)
            body = order_body(random.Random(7), f"lost-{uuid.uuid4().hex[:6]}", [sku])
            # Why a chosen key: the stack declines 15 % of charges, and this test
            # needs the charge through (a random order id made it flaky).
            placed = await http.post(
                "/orders", json=body, headers={"Idempotency-Key": key_whose_order(False)}
            )
            assert placed.status_code == 202, placed.text
            order_id = placed.json()["order_id"]

            async def created() -> bool | None:
                events = await store.read_stream(f"order-{order_id}")
                return any(e.event_type == "PaymentReceived" for e in events) or None

            # create_order committed; its local activity now hangs inside the task.
            await _wait_for(created, 60, "create_order committed")
            cancel = asyncio.create_task(
                http.post(f"/orders/{order_id}/cancel", json={"reason": "lost task"}, timeout=90)
            )
            # Let the update reach the server while the task is still open.
            await asyncio.sleep(1.0)
            assert not cancel.done(), "the cancel answered while the step was in flight"
            h.stack.kill("worker")
            await asyncio.to_thread(h.restart_process, "worker", OFF)
            answer = await cancel
            assert answer.status_code == 200, answer.text

            async def settled() -> str | None:
                got = await http.get(f"/sagas/{order_id}")
                live = got.json().get("live") if got.status_code == 200 else None
                status = (live or {}).get("status")
                return status if status in ("compensated", "compensation_parked") else None

            assert await _wait_for(settled, 60, "the saga compensated") == "compensated"
        events = await scenario_events(store, [order_id], [sku])
        order_events = [e.event_type for e in events if e.stream_id == f"order-{order_id}"]
        assert "OrderCancelled" in order_events, order_events
        assert check_ledger(events) == []
        reserved = sum(
            1 for e in events if e.event_type == "StockReserved" and e.data["order_id"] == order_id
        )
        released = sum(1 for e in events if e.event_type == "StockReservationReleased")
        assert reserved == released == 1
    finally:
        await store.close()
        if h.stack.env.get("SAGAFLOW_FAULT_HANG_AFTER_COMMIT"):
            await asyncio.to_thread(h.restart_process, "worker", OFF)
