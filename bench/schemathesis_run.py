"""The long schemathesis run of the closing notes, on a stack of its own, with seeded data.

    python -m bench.schemathesis_run [-n 1000] [--max-steps 20] [--har PATH]

Starts a local stack (embedded transport: the API's contract does not depend on the
transport), then seeds what a fresh stack lacks and the operator routes need: a
product in stock, sagas parked on their refund (a refund outage while they are
cancelled) and dead letters of real events. Then ``st run`` with every check and
the examples, coverage, fuzzing and stateful phases, one worker, a fixed seed, the
stateful phase's scenarios ``--max-steps`` long, a HAR report; then
``bench.schemathesis_reach`` over that report. Prints schemathesis' summary, the
reach table and, last, ``RESULT {json}`` (exit status, failures, reach).

The e2e suite runs the same ``run_schemathesis`` and seeding, bounded
(tests/e2e/test_schemathesis.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from sagaflow.settings import DEV_API_KEY, load_settings
from sagaflow.stack import Stack

ROOT = Path(__file__).resolve().parents[1]


def run_schemathesis(
    api_url: str,
    key: str,
    examples: int,
    har: Path,
    *,
    max_steps: int | None = None,
    timeout_s: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``st run`` with every check and phase against ``api_url``, recording a HAR file."""
    argv = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{api_url}/openapi.json",
        "--header",
        f"X-API-Key: {key}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(examples),
        # One worker: hypothesis parses lambda sources with ``ast``, which is not
        # thread-safe on CPython 3.11 (a "recursion depth mismatch" error).
        "--workers",
        "1",
        "--seed",
        "15",
        "--report",
        "har",
        "--report-har-path",
        str(har),
        "--no-color",
    ]
    config = None
    if max_steps is not None:
        # The stateful phase's scenario length has no CLI flag: a config file of this
        # run's own, the project's settings plus ``phases.stateful.max-steps``.
        config = har.with_suffix(".toml")
        project = (ROOT / "schemathesis.toml").read_text()
        config.write_text(f"[phases.stateful]\nmax-steps = {max_steps}\n\n{project}")
        argv[1:1] = ["--config-file", str(config)]
    return subprocess.run(
        argv,
        cwd=ROOT,  # schemathesis.toml
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


async def _eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"seeding: {what} not reached in {within:.0f} s")
        await asyncio.sleep(0.2)


async def seed_product(http: httpx.AsyncClient, stock: int = 1000) -> str:
    """A product in the catalogue with ``stock`` units; its SKU."""
    sku = f"SEED-{uuid.uuid4().hex[:8]}"
    created = await http.post(
        "/products", json={"sku": sku, "name": "Seeded lamp", "unit_price_cents": 1500}
    )
    created.raise_for_status()
    (await http.post(f"/products/{sku}/restock", json={"quantity": stock})).raise_for_status()
    return sku


async def seed_parked(
    http: httpx.AsyncClient,
    outage_file: Path,
    n: int,
    *,
    idempotency_key: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[str]:
    """``n`` confirmed orders cancelled during a refund outage: each parks its refund.

    The outage file is left in place, so a retry from the run parks again; the stack
    must run with ``SAGAFLOW_PAYMENT_REFUND_OUTAGE_FILE`` pointing at it.
    """
    sku = await seed_product(http)
    ids = []
    for _ in range(n):
        placed = await http.post(
            "/orders",
            json={"customer_id": "seed-1", "lines": [{"sku": sku, "quantity": 1}]},
            headers={"Idempotency-Key": idempotency_key()},
        )
        placed.raise_for_status()
        ids.append(placed.json()["order_id"])

    async def awaiting(order_id: str) -> bool:
        resp = await http.get(f"/orders/{order_id}/saga")
        return resp.status_code == 200 and resp.json().get("status") == "awaiting_shipment"

    for order_id in ids:
        await _eventually(functools.partial(awaiting, order_id), f"order {order_id} confirmed")
    outage_file.touch()  # noqa: ASYNC240 (one touch of a local file)
    for order_id in ids:
        cancel = await http.post(f"/sagas/{order_id}/cancel", json={"reason": "seeded drill"})
        if cancel.status_code != 200 or cancel.json().get("result") != "compensation_parked":
            raise RuntimeError(f"seeding: cancel of {order_id} answered {cancel.text}")
    return ids


async def seed_dead_letter(
    http: httpx.AsyncClient,
    database_url: str,
    consumer: str,
    *,
    idempotency_key: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> int:
    """A dead letter of a real, already projected event (as a poison message leaves one);
    its id. The order it comes from is placed here (it must not be declined)."""
    import psycopg

    from eventstore import RecordedEvent
    from projections.engine import dead_letter_for, store_dead_letter
    from streaming.transport import Message, Position

    sku = await seed_product(http, stock=10)
    placed = await http.post(
        "/orders",
        json={"customer_id": "seed-2", "lines": [{"sku": sku, "quantity": 1}]},
        headers={"Idempotency-Key": idempotency_key()},
    )
    placed.raise_for_status()
    path = f"/orders/{placed.json()['order_id']}/events"

    async def events() -> list[dict[str, Any]] | None:
        resp = await http.get(path)
        return resp.json() if resp.status_code == 200 and resp.json() else None

    recorded = RecordedEvent.from_envelope((await _eventually(events, f"{path} listed")).pop(0))
    message = Message(
        Position("seed", 0, recorded.global_position), recorded.stream_id, recorded=recorded
    )
    letter = dead_letter_for(consumer, message, "order_summary", "seeded: poison", 3)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await store_dead_letter(conn, letter)
    rows = (await http.get("/dead-letters")).json()
    return int(max(r["id"] for r in rows if r["stream_id"] == recorded.stream_id))


async def seed(
    stack: Stack,
    key: str,
    parked: int,
    dead_letters: int,
    *,
    idempotency_key: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> dict[str, Any]:
    """Parked sagas and dead letters on ``stack`` (see the module's docstring); the
    orders' Idempotency-Keys come from ``idempotency_key`` (none may be declined)."""
    outage = Path(stack.env["SAGAFLOW_PAYMENT_REFUND_OUTAGE_FILE"])
    consumer = stack.env.get("SAGAFLOW_PROJECTOR_GROUP", stack.settings.projector_group)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"X-API-Key": key}, timeout=30
    ) as http:
        parked_ids = await seed_parked(http, outage, parked, idempotency_key=idempotency_key)
        letters = [
            await seed_dead_letter(
                http, stack.env["SAGAFLOW_DATABASE_URL"], consumer, idempotency_key=idempotency_key
            )
            for _ in range(dead_letters)
        ]
    return {"parked": parked_ids, "dead_letters": letters}


def _summary(stdout: str) -> str:
    start = stdout.find("SUMMARY")
    return stdout[start if start >= 0 else max(0, len(stdout) - 4000) :]


def failures_in(stdout: str) -> int:
    """The failure count schemathesis' summary states (0 when it states none)."""
    found = re.findall(r"(\d+) failures?\b", _summary(stdout))
    return sum(int(n) for n in found[:1])


def main() -> None:
    """Start a stack, seed it, run schemathesis, count the reach, print."""
    from bench import schemathesis_reach

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--max-examples", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=20, help="stateful scenario length")
    parser.add_argument("--parked", type=int, default=3, help="sagas parked before the run")
    parser.add_argument("--dead-letters", type=int, default=3, help="dead letters seeded")
    parser.add_argument("--har", type=Path, help="where the HAR report goes (kept)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sagaflow-bench-st-") as tmp:
        har = args.har or Path(tmp) / "run.har"
        stack = Stack(
            load_settings(data_dir=Path(tmp) / "stack", transport="embedded", api_port=0),
            extra_env={
                "SAGAFLOW_PAYMENT_DECLINE_RATE": "0",
                "SAGAFLOW_PAYMENT_TRANSIENT_ERROR_RATE": "0",
                "SAGAFLOW_PAYMENT_REFUND_OUTAGE_FILE": str(Path(tmp) / "refunds-down"),
                # Why one attempt: POST /sagas/parked/retry answers once every parked
                # step's retry has run to its end (parked again, the outage lasting);
                # with two attempts and their backoff each call took seconds, and
                # schemathesis sends it a thousand times.
                "SAGAFLOW_COMPENSATION_RETRY_MAX_ATTEMPTS": "1",
            },
        )
        try:
            stack.start()
            seeded = asyncio.run(seed(stack, DEV_API_KEY, args.parked, args.dead_letters))
            print(f"seeded: parked sagas {seeded['parked']}, dead letters {seeded['dead_letters']}")
            started = time.monotonic()
            run = run_schemathesis(
                stack.api_url,
                DEV_API_KEY,
                args.max_examples,
                har,
                max_steps=args.max_steps,
                timeout_s=args.timeout,
            )
            seconds = time.monotonic() - started
        finally:
            stack.stop()
        print(_summary(run.stdout))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            schemathesis_reach.main([str(har)])
        lines = out.getvalue().splitlines()
        print("\n".join(lines[:-1]))
        reach = json.loads(lines[-1].removeprefix("RESULT "))
    result = {
        "exit_status": run.returncode,
        "failures": failures_in(run.stdout),
        "seconds": round(seconds),
        "max_examples": args.max_examples,
        "max_steps": args.max_steps,
        "reached": reach["reached"],
        "operations_with_path_parameters": reach["operations"],
    }
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
