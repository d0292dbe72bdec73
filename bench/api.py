"""API benchmark: GET /orders/{id} and POST /orders against a bare FastAPI route.

    python -m bench.api [--quick] [--repeats N]

Starts sagaflow's stack (embedded mode: no Kafka, to leave the 2 cores to the API),
and a bare FastAPI app under the same uvicorn settings as ``sagaflow api``; load
comes from ``wrk`` (16 connections). Prints a table (median and spread over the
repeats, ratio to the bare route) and, last, ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx

from sagaflow.services.base import free_port, spawn, stop_process, wait_until
from sagaflow.settings import DEV_API_KEY, load_settings
from sagaflow.stack import Stack

HEADER = f"X-API-Key: {DEV_API_KEY}"
POST_SCRIPT = "\n".join(
    [
        'wrk.method = "POST"',
        'wrk.body = \'{"customer_id": "bench", "lines": [{"sku": "BENCH-1", "quantity": 1}]}\'',
        'wrk.headers["Content-Type"] = "application/json"',
        f'wrk.headers["X-API-Key"] = "{DEV_API_KEY}"',
    ]
)


def _wrk(url: str, seconds: int, *extra: str) -> tuple[float, float, int, int]:
    """Requests/s, p99 ms, total requests and non-2xx responses."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", *extra, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_match, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_match.group(2)]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, float(p99_match.group(1)) * scale, total, int(bad.group(1)) if bad else 0


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    seconds = 3 if args.quick else 8
    with tempfile.TemporaryDirectory(prefix="sagaflow-bench-api-") as tmp:
        stack = Stack(load_settings(data_dir=Path(tmp), kafka_enabled=False, api_port=0))
        bare_port = free_port()
        bare = spawn(
            [sys.executable, "-m", "uvicorn", "bench.bare_api:app", "--port", str(bare_port),
             "--log-level", "warning"],
            log_file=Path(tmp) / "bare.log",
        )  # fmt: skip
        try:
            stack.start()
            bare_url = f"http://127.0.0.1:{bare_port}"
            wait_until(lambda: _ok(bare_url + "/orders/x"), timeout_s=30, what="bare API")
            order_id = _seed(stack.api_url)
            rows: dict[str, list[float]] = {k: [] for k in (
                "bare.rps", "bare.p99_ms", "order_summary.rps", "order_summary.p99_ms",
                "orders_post.per_s")}  # fmt: skip
            script = Path(tmp) / "post.lua"
            script.write_text(POST_SCRIPT)
            # Reads first, the bare route and the summary interleaved so machine noise
            # hits both alike; the POSTs last, because every accepted order starts a
            # saga whose work would otherwise load the machine during later reads.
            for _ in range(args.repeats):
                rps, p99, _, _ = _wrk(bare_url + "/orders/x", seconds)
                rows["bare.rps"].append(rps)
                rows["bare.p99_ms"].append(p99)
                rps, p99, _, bad = _wrk(f"{stack.api_url}/orders/{order_id}", seconds,
                                        "-H", HEADER)  # fmt: skip
                assert bad == 0, f"{bad} failed order-summary reads"
                rows["order_summary.rps"].append(rps)
                rows["order_summary.p99_ms"].append(p99)
            for _ in range(args.repeats):
                _, _, total, bad = _wrk(stack.api_url + "/orders", seconds, "-s", str(script))
                rows["orders_post.per_s"].append((total - bad) / seconds)
        finally:
            stop_process(bare.pid)
            stack.stop()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{'figure':28} {'median':>10} {'min':>10} {'max':>10}")
    for key, values in rows.items():
        print(f"{key:28} {med[key]:>10.1f} {min(values):>10.1f} {max(values):>10.1f}")
    print(f"order summary / bare route: {med['order_summary.rps'] / med['bare.rps']:.2f}x")
    print("RESULT " + json.dumps({k: round(v, 1) for k, v in med.items()}, sort_keys=True))


def _seed(api_url: str) -> str:
    with httpx.Client(base_url=api_url, headers={"X-API-Key": DEV_API_KEY}, timeout=30) as http:
        http.post("/products", json={"sku": "BENCH-1", "name": "Bench", "unit_price_cents": 100})
        http.post("/products/BENCH-1/restock", json={"quantity": 1_000_000}).raise_for_status()
        resp = http.post(
            "/orders", json={"customer_id": "bench", "lines": [{"sku": "BENCH-1", "quantity": 1}]}
        )
        resp.raise_for_status()
        order_id = str(resp.json()["order_id"])
        deadline = time.monotonic() + 60
        while http.get(f"/orders/{order_id}").json().get("status") != "paid":
            if time.monotonic() > deadline:
                raise SystemExit("the seed order never reached the read model")
            time.sleep(0.2)
        return order_id


if __name__ == "__main__":
    main()
