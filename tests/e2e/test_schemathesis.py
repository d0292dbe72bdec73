"""Property-based API testing from the served OpenAPI schema (schemathesis), bounded.

Every check schemathesis has (server errors, status codes, content types, response
schemas and headers, positive and negative data, auth, use after free, resource
availability...) over the examples, coverage, fuzzing and stateful phases; the
stateful phase follows the schema's links (api/contract.py) to reach the core with
ids the API handed out. ``schemathesis.toml`` holds the one allowance (422 for
requests whose validity the schema cannot express). Also: no workflow is started
by a request the API refused.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import Client

from bench.schemathesis_run import run_schemathesis, seed
from sagaflow.stack import Stack
from tests.e2e.conftest import KEY, key_whose_order

pytestmark = pytest.mark.integration

EXAMPLES = 10
"""Per operation and phase: bounded for the suite (the closing note's run uses 1000)."""


async def _workflow_ids(stack: Stack) -> set[str]:
    client = await Client.connect(stack.env["SAGAFLOW_TEMPORAL_ADDRESS"])
    queue = stack.env["SAGAFLOW_TASK_QUEUE"]
    return {wf.id async for wf in client.list_workflows(f"TaskQueue = '{queue}'")}


def _accepted(har: Path) -> set[str]:
    """Ids of the orders and sagas the API accepted (202) during the run."""
    ids: set[str] = set()
    for entry in json.loads(har.read_text())["log"]["entries"]:
        response = entry["response"]
        if response["status"] != 202:
            continue
        body = json.loads(response["content"].get("text") or "{}")
        ids.add(str(body.get("order_id") or body.get("saga_id")))
    return ids


def test_the_api_honours_its_schema_and_refused_requests_start_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    # A parked saga and a dead letter, so the stateful phase's links from the inbox
    # lists reach the operator actions with real ids (a fresh stack has neither).
    outage = Path(stack.env["SAGAFLOW_PAYMENT_REFUND_OUTAGE_FILE"])
    try:
        asyncio.run(seed(stack, KEY, 1, 1, idempotency_key=lambda: key_whose_order(False)))
        before = asyncio.run(_workflow_ids(stack))
        report = tmp_path / "schemathesis.har"
        run = run_schemathesis(stack.api_url, KEY, EXAMPLES, report, max_steps=12)
    finally:
        outage.unlink(missing_ok=True)
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-6000:]
    assert ("Stateful" in summary and "0 failures" not in summary) or "passed" in summary
    started: set[str] = set()
    accepted = _accepted(report)
    for _ in range(20):
        started = asyncio.run(_workflow_ids(stack)) - before
        if started <= accepted:
            break
    assert started <= accepted, f"workflows started by refused requests: {started - accepted}"
