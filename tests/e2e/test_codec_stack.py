"""Encrypted payloads across sagaflow's processes, as ``sagaflow dev`` runs them.

A stack of its own (its own dev server, so the server's start is under test too):
the API encrypts an order's input, the worker process decrypts it and runs the saga,
the server's history holds no clear customer id, the dev server's Web UI is pointed
at the API's codec endpoint, which answers the UI's preflight over real HTTP, and
``sagaflow replay`` replays the history with the keys (and not without them).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from sagaflow.settings import Settings, Transport, load_settings
from sagaflow.stack import Stack
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.integration

KEY = "codec-e2e-admin-key-0123"
KEYS = "k2:" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="module")
def codec_stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import psycopg

    assert settings.database_url
    db = f"codec_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    stack = Stack(
        load_settings(
            data_dir=tmp_path_factory.mktemp("codec-stack"),
            database_url=settings.database_url.rsplit("/", 1)[0] + "/" + db,
            transport=Transport.EMBEDDED,
            api_port=0,
            codec_keys=KEYS,
        ),
        # The processes read their settings from the environment, like in a deployment.
        extra_env={"SAGAFLOW_CODEC_KEYS": KEYS, "SAGAFLOW_API_KEYS": f'{{"{KEY}": "admin"}}'},
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def temporal_of(stack: Stack) -> Any:
    assert stack.services is not None
    return stack.services.running["temporal"]


async def test_an_order_runs_across_processes_with_only_ciphertext_on_the_server(
    codec_stack: Stack, tmp_path: Path
) -> None:
    customer = f"cust-secret-{uuid.uuid4().hex[:8]}"
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(
        base_url=codec_stack.api_url, headers={"X-API-Key": KEY}, timeout=30
    ) as http:
        created = await http.post(
            "/products", json={"sku": sku, "name": "Lamp", "unit_price_cents": 1500}
        )
        assert created.status_code == 201, created.text
        assert (await http.post(f"/products/{sku}/restock", json={"quantity": 5})).is_success
        placed = await http.post(
            "/orders",
            json={"customer_id": customer, "lines": [{"sku": sku, "quantity": 1}]},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]

        async def awaiting() -> bool:
            resp = await http.get(f"/orders/{order_id}/saga")
            return resp.status_code == 200 and resp.json().get("status") == "awaiting_shipment"

        await eventually(awaiting, within=60)  # the worker read the API's ciphertext

    raw = await Client.connect(temporal_of(codec_stack).addresses["address"])
    history = await raw.get_workflow_handle(order_id).fetch_history()
    stored = b"".join(e.SerializeToString() for e in history.events)
    assert customer.encode() not in stored and b"binary/encrypted" in stored

    exported = tmp_path / f"{order_id}.json"
    exported.write_text(history.to_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAFLOW_")}
    replay = [sys.executable, "-m", "sagaflow.cli", "replay", str(exported)]

    def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(replay, env={**env, **extra}, capture_output=True, text=True)

    keyed = await asyncio.to_thread(run, {"SAGAFLOW_CODEC_KEYS": KEYS})
    assert keyed.returncode == 0, keyed.stderr
    blind = await asyncio.to_thread(run, {})
    assert blind.returncode == 1, blind.stdout + blind.stderr
    assert "payloads are encrypted" in blind.stderr and "SAGAFLOW_CODEC_KEYS" in blind.stderr


async def test_the_dev_server_s_web_ui_decodes_through_the_api(codec_stack: Stack) -> None:
    temporal = temporal_of(codec_stack)
    cmdline = await asyncio.to_thread(Path(f"/proc/{temporal.pid}/cmdline").read_bytes)
    argv = cmdline.split(b"\0")
    endpoint = f"{codec_stack.api_url}/codec"
    assert argv[argv.index(b"--ui-codec-endpoint") + 1].decode() == endpoint
    ui = temporal.addresses["ui"]
    async with httpx.AsyncClient(timeout=10) as http:
        preflight = await http.options(
            f"{endpoint}/decode",
            headers={
                "Origin": ui,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == ui
        # The UI's own call (no key: the dev server's UI has no login; development only).
        call = await http.post(
            f"{endpoint}/decode",
            json={"payloads": []},
            headers={"Origin": ui, "X-Namespace": "default"},
        )
        assert call.status_code == 200 and call.json() == {"payloads": []}
        settings = await http.get(f"{ui}/api/v1/settings")
        assert settings.status_code == 200
        assert settings.json()["Codec"]["Endpoint"] == endpoint
