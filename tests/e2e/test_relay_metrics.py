"""/metrics names the relay that publishes (from its lease) on the running stack."""

from __future__ import annotations

import re

import httpx
import pytest

from sagaflow.stack import Stack
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.integration


async def test_metrics_name_the_active_relay_and_count_no_takeover_while_it_lives(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    if "relay" not in stack.procs:
        pytest.skip("embedded transport: no relay")
    pid = stack.procs["relay"].pid
    topic = stack.env["SAGAFLOW_KAFKA_TOPIC"]

    async def leader() -> list[tuple[str, str]] | None:
        text = (await http.get("/metrics")).text
        found = re.findall(
            r'^sagaflow_relay_leader\{destination="([^"]+)",relay_id="([^"]+)"\} 1\.0$',
            text,
            re.M,
        )
        return found or None

    assert await eventually(leader) == [(f"kafka:{topic}", f"{_host()}:{pid}")]
    text = (await http.get("/metrics")).text
    assert re.search(r"^sagaflow_relay_takeovers_total 0\.0$", text, re.M), text
    assert re.search(r"^sagaflow_relay_lease_epoch 1\.0$", text, re.M), text


def _host() -> str:
    import socket

    return socket.gethostname()
