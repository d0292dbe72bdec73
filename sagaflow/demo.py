"""``sagaflow demo``: seed products, run orders through the API, summarise the outcomes."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

PRODUCTS = [
    ("DEMO-MUG", "Mug", 1250),
    ("DEMO-TEE", "T-shirt", 1999),
    ("DEMO-CAP", "Cap", 1500),
    ("DEMO-BAG", "Tote bag", 899),
]
#: Saga states where the demo stops waiting: the saga is done or waits for people.
SETTLED = {"awaiting_shipment", "compensated", "compensation_parked", "shipped", "delivered"}


@dataclass
class DemoSummary:
    """What the demo saw: outcomes, revenue and latency from POST to a settled saga."""

    orders: int = 0
    accepted: int = 0
    completed: int = 0
    compensated: int = 0
    parked: int = 0
    unsettled: int = 0
    revenue_cents: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    order_ids: list[str] = field(default_factory=list)


async def _seed(http: httpx.AsyncClient, stock_per_sku: int) -> None:
    for sku, name, price in PRODUCTS:
        found = await http.get(f"/products/{sku}")
        if found.status_code == 404:
            created = await http.post(
                "/products", json={"sku": sku, "name": name, "unit_price_cents": price}
            )
            created.raise_for_status()
        restocked = await http.post(
            f"/products/{sku}/restock",
            json={"quantity": stock_per_sku},
            headers={"Idempotency-Key": f"demo-seed-{sku}-{uuid.uuid4().hex}"},
        )
        restocked.raise_for_status()


async def _one_order(
    http: httpx.AsyncClient, rng: random.Random, timeout_s: float
) -> tuple[str, str, int, float]:
    lines = rng.sample(PRODUCTS, rng.randint(1, 3))
    body = {
        "customer_id": f"cust-{rng.randint(1, 50)}",
        "lines": [{"sku": sku, "quantity": rng.randint(1, 3)} for sku, _, _ in lines],
    }
    started = time.perf_counter()
    resp = await http.post("/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    resp.raise_for_status()
    order_id = resp.json()["order_id"]
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        saga = await http.get(f"/orders/{order_id}/saga")
        if saga.status_code == 200:
            state = saga.json()
            if state.get("status") in SETTLED:
                break
        await asyncio.sleep(0.1)
    elapsed = (time.perf_counter() - started) * 1000
    return order_id, str(state.get("status", "unknown")), int(state.get("total_cents", 0)), elapsed


async def run_demo_async(
    api_url: str, api_key: str, orders: int, concurrency: int, *, seed: int = 7
) -> DemoSummary:
    """Place ``orders`` orders, ``concurrency`` at a time, and wait for each to settle."""
    summary = DemoSummary(orders=orders)
    latencies: list[float] = []
    rng = random.Random(seed)
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=api_url, headers={"X-API-Key": api_key}, timeout=30
    ) as http:
        await _seed(http, stock_per_sku=max(10, orders * 3))
        with Progress(transient=True) as progress:
            task = progress.add_task("orders", total=orders)

            async def run_one() -> None:
                async with limit:
                    order_id, status, total, ms = await _one_order(http, rng, 60)
                summary.accepted += 1
                summary.order_ids.append(order_id)
                latencies.append(ms)
                if status in ("awaiting_shipment", "shipped", "delivered"):
                    summary.completed += 1
                    summary.revenue_cents += total
                elif status == "compensated":
                    summary.compensated += 1
                elif status == "compensation_parked":
                    summary.parked += 1
                else:
                    summary.unsettled += 1
                progress.advance(task)

            await asyncio.gather(*(run_one() for _ in range(orders)))
    if latencies:
        ordered = sorted(latencies)
        summary.p50_ms = round(statistics.median(ordered), 1)
        summary.p99_ms = round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1)
    return summary


def run_demo(api_url: str, api_key: str, orders: int, concurrency: int) -> DemoSummary:
    """Synchronous wrapper for the CLI."""
    return asyncio.run(run_demo_async(api_url, api_key, orders, concurrency))


def print_summary(summary: DemoSummary, console: Console, *, as_json: bool = False) -> None:
    """A table for people, or one JSON object."""
    if as_json:
        console.print_json(json.dumps({k: v for k, v in asdict(summary).items()}))
        return
    table = Table(title=f"sagaflow demo: {summary.orders} orders")
    table.add_column("outcome")
    table.add_column("value", justify="right")
    for label, value in (
        ("accepted", summary.accepted),
        ("completed (awaiting shipment)", summary.completed),
        ("compensated", summary.compensated),
        ("parked", summary.parked),
        ("not settled in 60 s", summary.unsettled),
        ("revenue", f"{summary.revenue_cents / 100:,.2f}"),
        ("latency p50 (ms)", f"{summary.p50_ms:,.0f}"),
        ("latency p99 (ms)", f"{summary.p99_ms:,.0f}"),
    ):
        table.add_row(label, str(value))
    console.print(table)
