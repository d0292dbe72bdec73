"""Encrypted payloads on the real dev server: what the server keeps, replay, rotation,
and the API's remote codec endpoint.

Every client here comes from ``sagaflow.clients.connect_temporal`` (the one place
the worker, the API and the CLI get theirs); histories are read back raw, as the
server stores them, with a client that has no codec.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from api.main import create_app
from application.orders import start_order
from domain.commands import OrderLine, PlaceOrder
from eventstore.postgres import PostgresEventStore
from sagaflow.clients import connect_temporal
from sagaflow.codec import ENCODING, KEY_ID_METADATA, CodecKeyError, data_converter
from sagaflow.histories import replay_path
from sagaflow.settings import Environment, Settings
from tests.replay.saga_fixtures import fast_settings, stock_catalogue, wait_for_status
from worker import build_worker
from workflows.client import deliver_order, ship_order
from workflows.registry import default_registry

pytestmark = pytest.mark.integration

K1, K2 = os.urandom(32), os.urandom(32)
UI_ORIGIN = "http://127.0.0.1:18233"
READ_KEY = "read-only-key-0123456789"


def keyring(*names: str) -> SecretStr:
    """``SAGAFLOW_CODEC_KEYS`` of the named test keys, in that order (the first encrypts)."""
    keys = {"k1": K1, "k2": K2}
    return SecretStr(",".join(f"{n}:{base64.b64encode(keys[n]).decode()}" for n in names))


def with_keys(settings: Settings, *names: str, **overrides: Any) -> Settings:
    return settings.model_copy(
        update={"codec_keys": keyring(*names) if names else None, **overrides}
    )


@pytest.fixture
async def store(pg_store: PostgresEventStore) -> PostgresEventStore:
    await stock_catalogue(pg_store, {"A": (1000, 10)})
    return pg_store


@pytest.fixture(scope="module")
async def raw_client(settings: Settings) -> Client:
    """A client without codec: sees what the server stores."""
    assert settings.temporal_address
    return await Client.connect(settings.temporal_address)


def raw_bytes(history: WorkflowHistory) -> bytes:
    """Every event as the server sent it, serialized, plus the JSON export of it."""
    serialized = b"".join(event.SerializeToString() for event in history.events)
    return serialized + history.to_json().encode()


def key_ids(history: WorkflowHistory) -> set[str]:
    """The key ids found in the metadata of every encrypted payload of the history."""
    found: set[str] = set()

    def visit(message: Any) -> None:
        if isinstance(message, Payload):
            if message.metadata.get("encoding") == ENCODING:
                found.add(message.metadata[KEY_ID_METADATA].decode())
            return
        if not isinstance(message, Message):
            return
        for _, value in message.ListFields():
            if isinstance(value, Message):
                visit(value)
            elif hasattr(value, "values"):  # a map field
                for item in value.values():
                    visit(item)
            elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
                for item in value:  # a repeated field
                    visit(item)

    for event in history.events:
        visit(event)
    return found


async def run_order(cfg: Settings, store: PostgresEventStore, order_id: str, customer: str) -> Any:
    """One order saga from placement to delivery on ``cfg``'s codec; its handle."""
    client = await connect_temporal(cfg)
    cmd = PlaceOrder(
        order_id=order_id, customer_id=customer, lines=[OrderLine(sku="A", quantity=1)]
    )
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, cmd, store=store)
        await wait_for_status(client, order_id, "awaiting_shipment")
        assert await ship_order(client, order_id, "TRK-1", "DHL") == "shipped"
        assert await deliver_order(client, order_id) == "delivered"
        assert (await handle.result()).status == "delivered"
    return handle


async def test_history_holds_no_clear_customer_id_and_replays_with_the_codec(
    settings: Settings, store: PostgresEventStore, raw_client: Client, unique: str, tmp_path: Path
) -> None:
    base = fast_settings(settings, task_queue=f"q-{unique}")
    secret, control = f"cust-secret-{unique}", f"cust-plain-{unique}"
    # Control: with the codec off the same search finds the customer id (in the
    # input, the memo'd summary, the CustomerId search attribute...).
    await run_order(with_keys(base), store, f"plain-{unique}", control)
    plain = await raw_client.get_workflow_handle(f"plain-{unique}").fetch_history()
    assert control.encode() in raw_bytes(plain)

    cfg = with_keys(base, "k2", "k1")
    await run_order(cfg, store, f"enc-{unique}", secret)
    history = await raw_client.get_workflow_handle(f"enc-{unique}").fetch_history()
    assert secret.encode() not in raw_bytes(history)
    assert key_ids(history) == {"k2"}
    started = history.events[0].workflow_execution_started_event_attributes
    assert "CustomerId" not in started.search_attributes.indexed_fields
    assert "SagaType" in started.search_attributes.indexed_fields  # visibility still works

    workflows = default_registry().workflows
    replayed = await Replayer(
        workflows=workflows, data_converter=data_converter(cfg)
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None
    # Control: without the keys the same history does not replay.
    blind = await Replayer(workflows=workflows).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert blind.replay_failure is not None
    # The CLI's path (sagaflow replay) with the settings' converter.
    (tmp_path / "enc.json").write_text(history.to_json())
    [outcome] = await replay_path(tmp_path / "enc.json", data_converter=data_converter(cfg))
    assert outcome.ok, outcome.error


async def test_a_saga_started_under_a_retired_key_finishes_and_replays_after_rotation(
    settings: Settings, store: PostgresEventStore, raw_client: Client, unique: str, tmp_path: Path
) -> None:
    base = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"rot-{unique}"
    before = with_keys(base, "k1")
    client = await connect_temporal(before)
    cmd = PlaceOrder(order_id=order_id, customer_id="c-1", lines=[OrderLine(sku="A", quantity=1)])
    async with build_worker(client, before, store):
        await start_order(client, before, cmd, store=store)
        await wait_for_status(client, order_id, "awaiting_shipment")

    # Rotation: k2 encrypts from now on, k1 is kept to decrypt. A fresh worker has no
    # cached run, so it rebuilds the saga from the k1 history before shipping.
    after = with_keys(base, "k2", "k1")
    client = await connect_temporal(after)
    async with build_worker(client, after, store):
        assert await ship_order(client, order_id, "TRK-9", "UPS") == "shipped"
        assert await deliver_order(client, order_id) == "delivered"
        result = await client.get_workflow_handle(order_id).result()
    assert result["status"] == "delivered"  # an untyped handle: the decoded JSON
    history = await raw_client.get_workflow_handle(order_id).fetch_history()
    assert key_ids(history) == {"k1", "k2"}
    replayed = await Replayer(
        workflows=default_registry().workflows, data_converter=data_converter(after)
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None

    # k1 dropped from the keyring: its payloads fail with an error naming the key id.
    dropped = data_converter(with_keys(base, "k2"))
    started = history.events[0].workflow_execution_started_event_attributes
    with pytest.raises(CodecKeyError, match=r"key id 'k1', which is not in SAGAFLOW_CODEC_KEYS"):
        await dropped.decode(started.input.payloads)
    blind = await Replayer(
        workflows=default_registry().workflows, data_converter=dropped
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert "CodecKeyError" in str(blind.replay_failure)  # its message is encrypted here
    # sagaflow replay says which key is missing.
    (tmp_path / "rot.json").write_text(history.to_json())
    [outcome] = await replay_path(tmp_path / "rot.json", data_converter=dropped)
    assert not outcome.ok and "key id 'k1'" in outcome.error, outcome.error


# --- the API's remote codec endpoint -------------------------------------------------


@pytest.fixture
async def api_settings(settings: Settings, database_url: str) -> Settings:
    return with_keys(
        settings,
        "k2",
        "k1",
        database_url=database_url,
        codec_cors_origins=UI_ORIGIN,
        api_keys={READ_KEY: "read"},
    )


async def serve(cfg: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(cfg)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http


@pytest.fixture
async def http(api_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(api_settings):
        yield client


DEV = {"X-API-Key": "dev-key-change-me"}


def wire(payloads: list[Payload]) -> dict[str, Any]:
    """The remote codec protocol's JSON for ``payloads``."""
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def unwire(body: dict[str, Any]) -> list[Payload]:
    return [
        Payload(
            metadata={k: base64.b64decode(v) for k, v in p.get("metadata", {}).items()},
            data=base64.b64decode(p.get("data", "")),
        )
        for p in body["payloads"]
    ]


async def test_the_codec_endpoint_round_trips_with_the_workers_codec(
    http: httpx.AsyncClient, api_settings: Settings
) -> None:
    plain = await DataConverter.default.encode([{"customer_id": "c-secret-7"}, "second"])
    encoded = await http.post("/codec/encode", json=wire(plain), headers=DEV)
    assert encoded.status_code == 200, encoded.text
    sealed = unwire(encoded.json())
    assert [p.metadata["encoding"] for p in sealed] == [ENCODING, ENCODING]
    assert b"c-secret-7" not in b"".join(p.data for p in sealed)
    # What the API encrypted, the worker's converter reads; and back through /decode.
    assert await data_converter(api_settings).decode(sealed, [dict, str]) == [
        {"customer_id": "c-secret-7"},
        "second",
    ]
    decoded = await http.post("/codec/decode", json=encoded.json(), headers=DEV)
    assert decoded.status_code == 200
    assert unwire(decoded.json()) == plain
    by_bearer = await http.post(
        "/codec/decode", json=encoded.json(), headers={"Authorization": f"Bearer {READ_KEY}"}
    )
    assert by_bearer.status_code == 200 and unwire(by_bearer.json()) == plain


async def test_the_codec_endpoint_refuses_without_a_key_or_scope_and_on_unknown_key_ids(
    http: httpx.AsyncClient,
) -> None:
    body = wire(await DataConverter.default.encode(["x"]))
    assert (await http.post("/codec/decode", json=body)).status_code == 401
    wrong = await http.post("/codec/decode", json=body, headers={"X-API-Key": "nope" * 5})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"
    read_only = await http.post("/codec/encode", json=body, headers={"X-API-Key": READ_KEY})
    assert read_only.status_code == 403
    # An origin that is not the Web UI's gets nothing from the development exception.
    foreign = await http.post("/codec/decode", json=body, headers={"Origin": "http://evil:1"})
    assert foreign.status_code == 401
    unknown = Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: b"k9"}, data=b"0" * 40)
    refused = await http.post("/codec/decode", json=wire([unknown]), headers=DEV)
    assert refused.status_code == 422
    assert "key id 'k9'" in refused.json()["detail"]
    garbage = await http.post("/codec/decode", content=b"{not json", headers=DEV)
    assert garbage.status_code == 422 and "payloads" in garbage.json()["detail"]


async def test_the_codec_endpoint_answers_the_web_ui_s_preflight_and_calls(
    http: httpx.AsyncClient,
) -> None:
    preflight = await http.options(
        "/codec/decode",
        headers={
            "Origin": UI_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == UI_ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-namespace", "authorization"} <= {
        h.strip() for h in allowed.split(",")
    }
    assert "POST" in preflight.headers["access-control-allow-methods"]
    other = await http.options(
        "/codec/decode",
        headers={"Origin": "http://evil:1", "Access-Control-Request-Method": "POST"},
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    # The dev server's UI sends no key: served in development, from its origin only.
    body = wire(await DataConverter.default.encode(["x"]))
    call = await http.post(
        "/codec/decode", json=body, headers={"Origin": UI_ORIGIN, "X-Namespace": "default"}
    )
    assert call.status_code == 200
    assert call.headers["access-control-allow-origin"] == UI_ORIGIN
    # Other routes stay same-origin.
    health = await http.get("/health", headers={"Origin": UI_ORIGIN})
    assert "access-control-allow-origin" not in health.headers


async def test_outside_development_the_web_ui_needs_a_key_too(api_settings: Settings) -> None:
    cfg = api_settings.model_copy(
        update={"environment": Environment.PRODUCTION, "dev_api_key": SecretStr("s" * 32)}
    )
    body = wire(await DataConverter.default.encode(["x"]))
    async for http in serve(cfg):
        call = await http.post("/codec/decode", json=body, headers={"Origin": UI_ORIGIN})
        assert call.status_code == 401
        keyed = await http.post(
            "/codec/decode", json=body, headers={"Origin": UI_ORIGIN, "X-API-Key": READ_KEY}
        )
        assert keyed.status_code == 200


async def test_the_codec_routes_say_so_when_encryption_is_off(
    settings: Settings, database_url: str
) -> None:
    async for http in serve(settings.model_copy(update={"database_url": database_url})):
        off = await http.post("/codec/decode", json={"payloads": []}, headers=DEV)
        assert off.status_code == 404 and "SAGAFLOW_CODEC_KEYS" in off.json()["detail"]
