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


POLL_S = 0.25
"""How often the demo reads the saga read model (one request for all its orders)."""


def _order_body(rng: random.Random) -> tuple[dict[str, Any], int]:
    lines = rng.sample(PRODUCTS, rng.randint(1, 3))
    quantities = [rng.randint(1, 3) for _ in lines]
    body = {
        "customer_id": f"cust-{rng.randint(1, 50)}",
        "lines": [
            {"sku": sku, "quantity": q} for (sku, _, _), q in zip(lines, quantities, strict=True)
        ],
    }
    return body, sum(price * q for (_, _, price), q in zip(lines, quantities, strict=True))


class Outcomes:
    """Settled sagas of the demo's orders, read from the saga read model.

    Why the read model and not the saga's status query per order: a Temporal query
    per order every 100 ms cost the stack more than the orders; one ``GET /sagas``
    page every ``POLL_S`` (most recently changed first, read until rows older than the
    demo) covers every order at once.
    """

    def __init__(self, http: httpx.AsyncClient, started_at: float) -> None:
        self.http, self.started_at = http, started_at
        self.settled: dict[str, dict[str, Any]] = {}

    async def poll(self, wanted: set[str]) -> None:
        """Record the settled ones among ``wanted`` (one or a few requests)."""
        page = 1
        while True:
            resp = await self.http.get(
                "/sagas", params={"type": "OrderSaga", "page": page, "page_size": 200}
            )
            resp.raise_for_status()
            body = resp.json()
            oldest = self.started_at
            for row in body["items"]:
                if row["saga_id"] in wanted and row["status"] in SETTLED:
                    self.settled[row["saga_id"]] = row
                oldest = min(oldest, _ts(row["updated_at"]))
            if not body["has_more"] or oldest < self.started_at - 5:
                return
            page += 1


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def run_demo_async(
    api_url: str, api_key: str, orders: int, concurrency: int, *, seed: int = 7
) -> DemoSummary:
    """Place ``orders`` orders, ``concurrency`` at a time, and wait for each to settle."""
    summary = DemoSummary(orders=orders)
    rng = random.Random(seed)
    limit = asyncio.Semaphore(concurrency)
    totals: dict[str, int] = {}
    accepted_at: dict[str, float] = {}
    async with httpx.AsyncClient(
        base_url=api_url, headers={"X-API-Key": api_key}, timeout=30
    ) as http:
        await _seed(http, stock_per_sku=max(10, orders * 3))
        outcomes = Outcomes(http, time.time())
        with Progress(transient=True) as progress:
            task = progress.add_task("orders settled", total=orders)

            async def place_one() -> None:
                body, total = _order_body(rng)
                async with limit:
                    resp = await http.post(
                        "/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                    )
                    resp.raise_for_status()
                order_id = resp.json()["order_id"]
                totals[order_id] = total
                accepted_at[order_id] = time.time()
                summary.accepted += 1
                summary.order_ids.append(order_id)

            placing = asyncio.gather(*(place_one() for _ in range(orders)))
            deadline = time.monotonic() + 60 + orders / max(concurrency, 1)
            while time.monotonic() < deadline:
                await outcomes.poll(set(totals) - set(outcomes.settled))
                done = outcomes.settled
                progress.update(
                    task,
                    completed=len(done),
                    description=_progress_line(done),
                )
                if placing.done() and len(done) >= summary.accepted:
                    break
                await asyncio.sleep(POLL_S)
            await placing
    latencies: list[float] = []
    for order_id, row in outcomes.settled.items():
        status = row["status"]
        # Accept → settled as the read model saw it (server clocks, no polling error).
        latencies.append(max(0.0, (_ts(row["updated_at"]) - _ts(row["started_at"])) * 1000))
        if status in ("awaiting_shipment", "shipped", "delivered"):
            summary.completed += 1
            summary.revenue_cents += totals[order_id]
        elif status == "compensated":
            summary.compensated += 1
        elif status == "compensation_parked":
            summary.parked += 1
    summary.unsettled = summary.accepted - len(outcomes.settled)
    if latencies:
        ordered = sorted(latencies)
        summary.p50_ms = round(statistics.median(ordered), 1)
        summary.p99_ms = round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1)
    return summary


def _progress_line(done: dict[str, dict[str, Any]]) -> str:
    statuses = [row["status"] for row in done.values()]
    completed = sum(s in ("awaiting_shipment", "shipped", "delivered") for s in statuses)
    compensated = statuses.count("compensated")
    parked = statuses.count("compensation_parked")
    return f"settled: {completed} completed, {compensated} compensated, {parked} parked"


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
