"""Property-based API testing from the served OpenAPI schema (schemathesis), bounded.

Checks: no 5xx, every response matches its documented status, content type and
schema, and no workflow is started by a request the API refused.
"""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client

from sagaflow.stack import Stack
from tests.e2e.conftest import KEY

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


async def _workflow_ids(stack: Stack) -> set[str]:
    client = await Client.connect(stack.env["SAGAFLOW_TEMPORAL_ADDRESS"])
    queue = stack.env["SAGAFLOW_TASK_QUEUE"]
    return {wf.id async for wf in client.list_workflows(f"TaskQueue = '{queue}'")}


def test_the_api_honours_its_schema_and_refused_requests_start_nothing(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(stack.api_url + "/openapi.json")
    before = asyncio.run(_workflow_ids(stack))
    accepted: set[str] = set()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=stack.api_url, headers={"X-API-Key": KEY}, checks=CHECKS
            )
            if case.path == "/orders" and case.method == "POST" and response.status_code == 202:
                accepted.add(response.json()["order_id"])
            if case.path == "/sagas/{saga_type}" and response.status_code == 202:
                accepted.add(response.json()["saga_id"])

        check()
    # Workflows are eventually visible in Temporal's list: give it a moment.
    started: set[str] = set()
    for _ in range(20):
        started = asyncio.run(_workflow_ids(stack)) - before
        if started >= accepted:
            break
    assert started <= accepted, f"workflows started by refused requests: {started - accepted}"
