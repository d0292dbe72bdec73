"""``sagaflow demo`` against the running stack: its summary matches the read models."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from sagaflow.stack import Stack
from tests.e2e.conftest import KEY, eventually

pytestmark = pytest.mark.integration


async def test_the_demo_summary_agrees_with_the_read_models(stack: Stack) -> None:
    run = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "sagaflow.cli",
            "demo",
            "--api",
            stack.api_url,
            "--orders",
            "8",
            "--concurrency",
            "4",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=stack.env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert summary["accepted"] == 8
    assert summary["unsettled"] == 0
    assert summary["completed"] + summary["compensated"] + summary["parked"] == 8
    assert summary["compensated"] >= 1, "a 50% decline rate over 8 orders declined none"
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"X-API-Key": KEY}, timeout=30
    ) as http:

        async def read_models_settled() -> dict[str, int] | None:
            paid = cancelled = revenue = 0
            for order_id in summary["order_ids"]:
                resp = await http.get(f"/orders/{order_id}")
                status = resp.json().get("status") if resp.status_code == 200 else None
                if status == "paid":
                    paid += 1
                    revenue += resp.json()["total_cents"]
                elif status in ("cancelled", "rejected"):
                    cancelled += 1
            if paid != summary["completed"]:
                return None
            return {"paid": paid, "cancelled": cancelled, "revenue": revenue}

        models = await eventually(read_models_settled)
    assert models["revenue"] == summary["revenue_cents"]
    assert summary["p50_ms"] > 0 and summary["p99_ms"] >= summary["p50_ms"]


def test_the_demo_refuses_payment_rates_it_cannot_apply_to_a_running_api(stack: Stack) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagaflow.cli",
            "demo",
            "--api",
            stack.api_url,
            "--decline-rate",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=stack.env,
    )
    assert run.returncode == 2
    assert "with --api the running worker's own settings apply" in run.stderr
    assert "Traceback" not in run.stderr
