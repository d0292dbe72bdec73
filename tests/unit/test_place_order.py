"""Placing an order: shape checked before any I/O, the catalogue read once, nothing
written by a refused request."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.models import TOKEN_PATTERN
from application import Context, Unavailable
from application.catalogue import register_product
from application.errors import InvalidConsistencyToken
from application.orders import ConsistencyToken, place_order
from domain.commands import RegisterProduct
from domain.errors import InvalidCommand
from eventstore import START, InMemoryEventStore, RecordedEvent, Snapshot
from sagaflow.settings import Settings
from workflows.models import OrderSagaInput


class CountingStore(InMemoryEventStore):
    """Counts the reads a catalogue look-up could make."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        self.reads += 1
        return await super().read_stream(stream_id, from_version)

    async def stream_version(self, stream_id: str) -> int:
        self.reads += 1
        return await super().stream_version(stream_id)

    async def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        self.reads += 1
        return await super().stream_versions(stream_ids)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        self.reads += 1
        return await super().load_snapshot(stream_id)


class FakeTemporal:
    """Records the sagas started (``start_workflow`` is all placing an order calls)."""

    def __init__(self) -> None:
        self.started: list[OrderSagaInput] = []

    async def start_workflow(self, _run: Any, saga_input: OrderSagaInput, **_: Any) -> None:
        self.started.append(saga_input)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def temporal() -> FakeTemporal:
    return FakeTemporal()


@pytest.fixture
def ctx(store: CountingStore, temporal: FakeTemporal) -> Context:
    return Context(Settings(order_max_lines=50), store, cast(Any, temporal))


async def stock(store: CountingStore, skus: list[str]) -> None:
    for sku in skus:
        await register_product(store, RegisterProduct(sku=sku, name=sku, unit_price_cents=100))
    store.reads = 0


async def test_a_refused_thousand_line_order_reads_no_catalogue_and_writes_nothing(
    ctx: Context, store: CountingStore, temporal: FakeTemporal
) -> None:
    admitted: list[bool] = []

    async def admit() -> None:
        admitted.append(True)

    lines = [(f"SKU-{i}", 1) for i in range(1000)]
    with pytest.raises(InvalidCommand, match="1000 lines, more than max_lines 50"):
        await place_order(ctx, "c-1", lines, admit=admit)
    assert store.reads == 0
    assert admitted == []
    assert temporal.started == []
    assert await store.read_feed(START) == []


@pytest.mark.parametrize(
    "lines",
    [[("A", 0)], [("A", 1), ("A", 2)], [], [("A", 5_000)]],
    ids=["zero quantity", "duplicate sku", "no lines", "too many units"],
)
async def test_a_badly_shaped_order_is_refused_before_any_read(
    ctx: Context, store: CountingStore, lines: list[tuple[str, int]]
) -> None:
    with pytest.raises(InvalidCommand):
        await place_order(ctx, "c-1", lines)
    assert store.reads == 0


async def test_a_valid_order_looks_up_all_its_skus_in_one_read(
    ctx: Context, store: CountingStore, temporal: FakeTemporal
) -> None:
    skus = [f"SKU-{i}" for i in range(40)]
    await stock(store, skus)
    placed = await place_order(ctx, "c-1", [(sku, 2) for sku in skus], user_id="u")
    assert store.reads == 1
    [started] = temporal.started
    assert started.order_id == placed.order_id
    assert [(line.sku, line.quantity) for line in started.lines] == [(sku, 2) for sku in skus]
    _, stream_id, version = ConsistencyToken.decode(placed.consistency_token)
    assert (stream_id, version) == (f"saga-{placed.order_id}", 1)


async def test_unknown_skus_are_all_named_and_nothing_is_started_or_written(
    ctx: Context, store: CountingStore, temporal: FakeTemporal
) -> None:
    await stock(store, ["MUG"])
    written = len(await store.read_feed(START))
    with pytest.raises(InvalidCommand) as info:
        await place_order(ctx, "c-1", [("MUG", 1), ("GHOST", 1), ("NOPE", 2)])
    assert info.value.problems == [
        "line 1 (sku GHOST): unknown sku",
        "line 2 (sku NOPE): unknown sku",
    ]
    assert store.reads == 1
    assert temporal.started == []
    assert len(await store.read_feed(START)) == written


async def test_without_temporal_a_valid_order_is_unavailable_and_writes_nothing(
    store: CountingStore,
) -> None:
    await stock(store, ["MUG"])
    written = len(await store.read_feed(START))
    with pytest.raises(Unavailable, match="no Temporal connection"):
        await place_order(Context(Settings(), store), "c-1", [("MUG", 1)])
    assert len(await store.read_feed(START)) == written


@pytest.mark.parametrize(
    "token",
    [
        "1~order-\x00x~1",  # schemathesis: a NUL in the stream part was a 500 from PostgreSQL
        "1~order-a~\u00b2",  # str.isdigit takes "²", int() does not
        "\u00b2~order-a~1",
        "1~~1",
        "1~order-a",
        "1~order a~1",
        "9" * 20 + "~order-a~1",
        "1~" + "s" * 201 + "~1",
    ],
)
def test_a_malformed_consistency_token_is_refused_before_any_query(token: str) -> None:
    with pytest.raises(InvalidConsistencyToken):
        ConsistencyToken.decode(token)


@given(st.from_regex(TOKEN_PATTERN, fullmatch=True))
def test_every_token_the_api_schema_allows_decodes(token: str) -> None:
    # The bounded schemathesis run caught a decode stricter than the schema (ST202):
    # the two must agree, both ways.
    position, stream_id, version = ConsistencyToken.decode(token)
    assert ConsistencyToken.encode(position, stream_id, version).split("~")[1] == stream_id
    assert int(token.split("~")[2]) == version


def test_a_token_round_trips() -> None:
    token = ConsistencyToken.encode(12, "order-a", 3)
    assert ConsistencyToken.decode(token) == (12, "order-a", 3)
    assert re.fullmatch(TOKEN_PATTERN, token)
