"""Console benchmark, measured in a real browser (Debian's chromium via Playwright).

    python -m bench.console [--quick] [--runs N] [--orders N] [--api URL --key KEY]

Starts sagaflow's stack (embedded transport, no declines: every order completes)
unless ``--api`` names a running one, then per run:

- **first paint** of each console page (the browser's ``first-contentful-paint``),
  loaded fresh;
- **event → screen**: with the sagas page open, orders are placed through the API
  at a steady rate; a MutationObserver in the page notes when each saga's row first
  shows ``awaiting_shipment``; the delay is that moment minus the ``recorded_at`` of
  the saga's ``SagaCompleted`` event (same machine, same clock).

Prints p50/p99 per run and, last, ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from sagaflow.settings import DEV_API_KEY, load_settings
from sagaflow.stack import Stack

CHROMIUM = "/usr/bin/chromium"
PAGES = ("/console", "/console/sagas", "/console/inbox", "/console/products")
OBSERVER = """
() => {
  window.__seen = {};
  const scan = () => {
    const now = Date.now();
    document.querySelectorAll('tr[data-saga][data-status=awaiting_shipment]').forEach(r => {
      const id = r.getAttribute('data-saga');
      if (!(id in window.__seen)) window.__seen[id] = now;
    });
  };
  new MutationObserver(scan).observe(document.getElementById('live'),
                                     {childList: true, subtree: true});
  scan();
}
"""


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def _seed(http: httpx.AsyncClient, sku: str, stock: int) -> None:
    await http.post("/products", json={"sku": sku, "name": "Bench lamp", "unit_price_cents": 900})
    resp = await http.post(f"/products/{sku}/restock", json={"quantity": stock})
    resp.raise_for_status()


async def _login(browser: Any, api_url: str, key: str) -> Any:
    context = await browser.new_context(base_url=api_url)
    page = await context.new_page()
    await page.goto("/console/login")
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    return page


async def first_paints(page: Any) -> dict[str, float]:
    """First contentful paint (ms) of each page, loaded fresh."""
    paints: dict[str, float] = {}
    for path in PAGES:
        await page.goto(path, wait_until="load")
        paints[path] = await page.evaluate(
            "() => new Promise(done => { const f = () => { const e = performance"
            ".getEntriesByName('first-contentful-paint')[0]; e ? done(e.startTime)"
            " : setTimeout(f, 10); }; f(); })"
        )
    return paints


async def event_to_screen(
    page: Any, http: httpx.AsyncClient, sku: str, orders: int, rate: float
) -> list[float]:
    """Delays (ms) from each order's SagaCompleted to its row showing it."""
    customer = f"bench-{uuid.uuid4().hex[:6]}"
    await page.goto(f"/console/sagas?customer={customer}")
    await page.wait_for_function("() => document.getElementById('live-state').className === 'on'")
    await page.evaluate(OBSERVER)
    ids = []
    for _ in range(orders):
        body = {"customer_id": customer, "lines": [{"sku": sku, "quantity": 1}]}
        resp = await http.post("/orders", json=body)
        resp.raise_for_status()
        ids.append(resp.json()["order_id"])
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + 60
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        seen = await page.evaluate("() => window.__seen")
        if all(i in seen for i in ids):
            break
        await asyncio.sleep(0.2)
    delays = []
    for order_id in ids:
        if order_id not in seen:
            continue
        events = (await http.get(f"/sagas/{order_id}/events")).json()
        [done] = [e for e in events if e["event_type"] == "SagaCompleted"]
        recorded = datetime.fromisoformat(done["recorded_at"]).timestamp() * 1000
        delays.append(seen[order_id] - recorded)
    missing = len(ids) - len(delays)
    if missing:
        print(f"  {missing} of {len(ids)} orders never showed in 60 s", file=sys.stderr)
    return delays


async def run(api_url: str, key: str, runs: int, orders: int, rate: float) -> dict[str, Any]:
    """Every run's figures."""
    from playwright.async_api import async_playwright

    result: dict[str, Any] = {"runs": []}
    async with (
        httpx.AsyncClient(base_url=api_url, headers={"X-API-Key": key}, timeout=30) as http,
        async_playwright() as pw,
    ):
        sku = f"BENCH-{uuid.uuid4().hex[:6]}"
        await _seed(http, sku, orders * runs + 10)
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for n in range(1, runs + 1):
                page = await _login(browser, api_url, key)
                paints = await first_paints(page)
                delays = await event_to_screen(page, http, sku, orders, rate)
                await page.context.close()
                figures = {
                    "first_paint_ms": {p: round(v, 1) for p, v in paints.items()},
                    "first_paint_max_ms": round(max(paints.values()), 1),
                    "event_to_screen_p50_ms": round(statistics.median(delays), 1),
                    "event_to_screen_p99_ms": round(pct(delays, 0.99), 1),
                    "orders_seen": len(delays),
                }
                result["runs"].append(figures)
                print(
                    f"run {n}: first paint max {figures['first_paint_max_ms']} ms "
                    f"({', '.join(f'{p} {v:.0f}' for p, v in paints.items())}); "
                    f"event→screen p50 {figures['event_to_screen_p50_ms']} ms, "
                    f"p99 {figures['event_to_screen_p99_ms']} ms over {len(delays)} orders"
                )
        finally:
            await browser.close()
    return result


def main() -> None:
    """Parse arguments, start a stack unless given an API, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run of 10 orders")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--orders", type=int, default=40, help="orders per run")
    parser.add_argument("--rate", type=float, default=4.0, help="orders per second")
    parser.add_argument("--api", help="a running API instead of starting a stack")
    parser.add_argument("--key", default=DEV_API_KEY, help="an API key with write scope")
    args = parser.parse_args()
    runs, orders = (1, 10) if args.quick else (args.runs, args.orders)
    if args.api:
        result = asyncio.run(run(args.api, args.key, runs, orders, args.rate))
    else:
        with tempfile.TemporaryDirectory(prefix="sagaflow-bench-console-") as tmp:
            stack = Stack(
                load_settings(data_dir=Path(tmp), transport="embedded", api_port=0),
                extra_env={
                    "SAGAFLOW_PAYMENT_DECLINE_RATE": "0",
                    "SAGAFLOW_PAYMENT_TRANSIENT_ERROR_RATE": "0",
                },
            )
            try:
                stack.start()
                result = asyncio.run(run(stack.api_url, args.key, runs, orders, args.rate))
            finally:
                stack.stop()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
