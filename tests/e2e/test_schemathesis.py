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
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from sagaflow.stack import Stack
from tests.e2e.conftest import KEY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 10
"""Per operation and phase: bounded for the suite (the closing note's run uses 1000)."""


async def _workflow_ids(stack: Stack) -> set[str]:
    client = await Client.connect(stack.env["SAGAFLOW_TEMPORAL_ADDRESS"])
    queue = stack.env["SAGAFLOW_TASK_QUEUE"]
    return {wf.id async for wf in client.list_workflows(f"TaskQueue = '{queue}'")}


def run_schemathesis(
    api_url: str, key: str, examples: int, har: Path
) -> subprocess.CompletedProcess[str]:
    """``st run`` with every check and phase against ``api_url``, recording a HAR file."""
    return subprocess.run(
        [
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
        ],
        cwd=ROOT,  # schemathesis.toml
        capture_output=True,
        text=True,
        timeout=600,
    )


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
    before = asyncio.run(_workflow_ids(stack))
    report = tmp_path / "schemathesis.ndjson"
    run = run_schemathesis(stack.api_url, KEY, EXAMPLES, report)
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
