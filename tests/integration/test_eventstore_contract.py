"""The event-store contract, run against every implementation (in-memory and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from domain.events import OrderCreated, OrderSubmitted, StockAdded
from domain.inventory import Inventory
from eventstore import (
    ANY_VERSION,
    NO_STREAM,
    START,
    ConcurrencyError,
    DuplicateEventConflict,
    EventStore,
    InMemoryEventStore,
    InvalidStreamId,
    NewEvent,
    RecordedEvent,
    Repository,
    Snapshot,
    UnreadableEvent,
)


@pytest.fixture(params=["memory", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Each contract test runs once per implementation (None = in memory)."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("database_url")
    return url


@pytest.fixture
async def store(store_url: str | None) -> AsyncIterator[EventStore]:
    """The store under test."""
    if store_url is None:
        yield InMemoryEventStore()
        return
    from eventstore.postgres import PostgresEventStore

    pg = await PostgresEventStore.connect(store_url, migrate=False)
    try:
        yield pg
    finally:
        await pg.close()


def created(n: int = 1) -> list[NewEvent]:
    return [NewEvent(OrderCreated(order_id=f"o{i}", customer_id="c")) for i in range(n)]


async def test_appends_a_new_stream_and_reads_it_back(store: EventStore) -> None:
    events = created(3)
    result = await store.append("order-a", events, NO_STREAM, stream_type="Order")
    assert (result.first_version, result.last_version, result.duplicate) == (1, 3, False)
    stored = await store.read_stream("order-a")
    assert [e.version for e in stored] == [1, 2, 3]
    assert [e.event_id for e in stored] == [e.event_id for e in events]
    assert {e.stream_type for e in stored} == {"Order"}
    assert await store.stream_version("order-a") == 3
    assert [e.version for e in await store.read_stream("order-a", from_version=3)] == [3]


async def test_stream_versions_reads_many_streams_at_once_and_omits_missing_ones(
    store: EventStore,
) -> None:
    tag = uuid.uuid4().hex[:8]
    await store.append(f"order-{tag}-1", created(3), NO_STREAM, stream_type="Order")
    await store.append(f"order-{tag}-2", created(1), NO_STREAM, stream_type="Order")
    found = await store.stream_versions([f"order-{tag}-1", f"order-{tag}-2", f"order-{tag}-none"])
    assert found == {f"order-{tag}-1": 3, f"order-{tag}-2": 1}
    assert await store.stream_versions([]) == {}
    with pytest.raises(InvalidStreamId):
        await store.stream_versions(["has space"])


async def test_a_wrong_expected_version_names_the_stream_and_writes_nothing(
    store: EventStore,
) -> None:
    await store.append("order-b", created(2), NO_STREAM, stream_type="Order")
    with pytest.raises(ConcurrencyError, match="'order-b': expected version 1, found version 2"):
        await store.append("order-b", created(1), 1, stream_type="Order")
    with pytest.raises(ConcurrencyError, match="expected no stream, found version 2"):
        await store.append("order-b", created(1), NO_STREAM, stream_type="Order")
    with pytest.raises(ConcurrencyError, match="expected version 4, found no stream"):
        await store.append("order-none", created(1), 4, stream_type="Order")
    assert await store.stream_version("order-b") == 2
    assert len(await store.read_feed(START)) == 2


async def test_any_version_appends_after_whatever_is_there(store: EventStore) -> None:
    await store.append("order-c", created(1), ANY_VERSION, stream_type="Order")
    result = await store.append("order-c", created(2), ANY_VERSION, stream_type="Order")
    assert (result.first_version, result.last_version) == (2, 3)


async def test_appending_the_same_event_ids_twice_writes_once(store: EventStore) -> None:
    events = created(2)
    first = await store.append("order-d", events, NO_STREAM, stream_type="Order")
    again = await store.append("order-d", events, NO_STREAM, stream_type="Order")
    assert again.duplicate
    assert again.global_positions == first.global_positions
    assert len(await store.read_stream("order-d")) == 2
    assert len(await store.read_feed(START)) == 2


async def test_a_partly_stored_append_is_refused_and_writes_nothing(store: EventStore) -> None:
    events = created(2)
    await store.append("order-e", events[:1], NO_STREAM, stream_type="Order")
    with pytest.raises(DuplicateEventConflict):
        await store.append("order-e", events, 1, stream_type="Order")
    assert await store.stream_version("order-e") == 1


async def test_a_stored_event_id_for_another_fact_is_refused(store: EventStore) -> None:
    first = NewEvent(OrderCreated(order_id="o1", customer_id="c"))
    await store.append("order-f", [first], NO_STREAM, stream_type="Order")
    other_data = NewEvent(OrderCreated(order_id="o1", customer_id="d"), event_id=first.event_id)
    other_type = NewEvent(OrderSubmitted(total_cents=1), event_id=first.event_id)
    with pytest.raises(DuplicateEventConflict, match="with other data"):
        await store.append("order-f", [other_data], ANY_VERSION, stream_type="Order")
    with pytest.raises(DuplicateEventConflict, match=r"\(OrderCreated\), not as OrderSubmitted"):
        await store.append("order-f", [other_type], ANY_VERSION, stream_type="Order")
    with pytest.raises(DuplicateEventConflict, match="not in 'order-g'"):
        await store.append("order-g", [first], ANY_VERSION, stream_type="Order")
    # The same fact again, with other metadata (a retry's attempt), is still a no-op.
    retried = NewEvent(first.event, event_id=first.event_id, metadata={"activity_id": "2"})
    again = await store.append("order-f", [retried], ANY_VERSION, stream_type="Order")
    assert again.duplicate and again.first_version == 1
    assert [e.data["customer_id"] for e in await store.read_stream("order-f")] == ["c"]
    assert await store.stream_version("order-g") == 0
    assert len(await store.read_feed(START)) == 1


@pytest.mark.parametrize("bad", ["", "x" * 201, "has space", "semi;colon"])
async def test_refuses_bad_stream_ids_before_writing(store: EventStore, bad: str) -> None:
    with pytest.raises(InvalidStreamId):
        await store.append(bad, created(1), NO_STREAM, stream_type="Order")
    assert await store.read_feed(START) == []


async def test_the_feed_lists_every_stream_in_commit_order(store: EventStore) -> None:
    await store.append("order-f1", created(2), NO_STREAM, stream_type="Order")
    await store.append("order-f2", created(1), NO_STREAM, stream_type="Order")
    await store.append("order-f1", created(1), 2, stream_type="Order")
    feed = await store.read_feed(START)
    assert [(e.stream_id, e.version) for e in feed] == [
        ("order-f1", 1),
        ("order-f1", 2),
        ("order-f2", 1),
        ("order-f1", 3),
    ]
    # Paging by cursor continues exactly where the last page ended.
    first_page = await store.read_feed(START, limit=3)
    rest = await store.read_feed(first_page[-1].cursor)
    assert [e.event_id for e in first_page + rest] == [e.event_id for e in feed]


async def test_follow_yields_events_appended_later(store: EventStore) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def tail() -> None:
        async for batch in store.follow(START, poll_interval_s=0.01, stop=stop):
            seen.extend(e.stream_id for e in batch)
            if len(seen) >= 2:
                stop.set()

    task = asyncio.create_task(tail())
    await store.append("order-g1", created(1), NO_STREAM, stream_type="Order")
    await asyncio.sleep(0.05)
    await store.append("order-g2", created(1), NO_STREAM, stream_type="Order")
    await asyncio.wait_for(task, 10)
    assert seen == ["order-g1", "order-g2"]


async def test_metadata_is_stored_with_each_event(store: EventStore) -> None:
    meta = {"correlation_id": "corr", "causation_id": "cause", "user_id": "u1",
            "workflow_id": "wf-1", "activity_id": "act-3"}  # fmt: skip
    await store.append(
        "order-h",
        [NewEvent(OrderSubmitted(total_cents=5), metadata=meta)],
        NO_STREAM,
        stream_type="Order",
    )
    (stored,) = await store.read_stream("order-h")
    assert stored.metadata == meta
    assert stored.data == {"total_cents": 5}


async def test_snapshots_are_replaced_by_newer_ones(store: EventStore) -> None:
    await store.save_snapshot(Snapshot("inventory-s", "Inventory", 5, 1, {"a": 1}))
    await store.save_snapshot(Snapshot("inventory-s", "Inventory", 9, 1, {"a": 2}))
    await store.save_snapshot(Snapshot("inventory-s", "Inventory", 7, 1, {"a": 3}))
    snap = await store.load_snapshot("inventory-s")
    assert snap is not None
    assert (snap.version, snap.state) == (9, {"a": 2})
    assert await store.load_snapshot("inventory-none") is None


async def test_repository_loads_snapshot_plus_tail_equal_to_full_replay(
    store: EventStore,
) -> None:
    repo = Repository(store, Inventory, snapshot_every=10)
    inv = Inventory("SKU-1")
    inv.register("Widget", 250)
    await repo.save(inv)
    for i in range(25):
        inv.add_stock(3)
        if i % 4 == 0:
            inv.reserve(f"r{i}", f"o{i}", 2)
        await repo.save(inv)
    snap = await store.load_snapshot("inventory-SKU-1")
    assert snap is not None
    assert snap.version % 10 == 0 and snap.version > 0
    from_snapshot = await repo.load("SKU-1")
    full = await repo.load("SKU-1", use_snapshot=False)
    assert from_snapshot.state_dict() == full.state_dict() == inv.state_dict()


async def test_a_keyed_read_returns_one_sub_entitys_events_up_to_a_version(
    store: EventStore,
) -> None:
    repo = Repository(store, Inventory)
    inv = Inventory("SKU-K")
    inv.register("Keyed", 100)
    inv.add_stock(10)
    inv.reserve("r-1", "o-1", 2)
    inv.reserve("r-2", "o-2", 3)
    inv.release("r-1")
    await repo.save(inv)
    other = Inventory("SKU-K2")
    other.register("Other", 100)
    other.add_stock(5)
    other.reserve("r-1", "o-9", 1)
    await repo.save(other)

    r1 = await store.read_stream_keyed("inventory-SKU-K", "reservation_id", "r-1")
    assert [(e.version, e.event_type) for e in r1] == [
        (3, "StockReserved"),
        (5, "StockReservationReleased"),
    ]
    bounded = await store.read_stream_keyed(
        "inventory-SKU-K", "reservation_id", "r-1", to_version=4
    )
    assert [e.version for e in bounded] == [3]
    assert await store.read_stream_keyed("inventory-SKU-K", "reservation_id", "r-3") == []
    assert await store.read_stream_keyed("inventory-none", "reservation_id", "r-1") == []


async def test_a_sub_entity_loaded_after_a_snapshot_is_what_a_full_replay_sees(
    store: EventStore,
) -> None:
    repo = Repository(store, Inventory, snapshot_every=10)
    inv = Inventory("SKU-E")
    inv.register("Entity", 100)
    await repo.save(inv)
    for i in range(30):
        inv.add_stock(3)
        inv.reserve(f"r{i}", f"o{i}", 2)
        if i % 3 == 0:
            inv.sell(f"r{i}")
        elif i % 3 == 1 and i < 20:
            inv.release(f"r{i}")
        await repo.save(inv)
    snap = await store.load_snapshot("inventory-SKU-E")
    assert snap is not None and snap.version > 0
    assert "reservations" not in snap.state
    full = await repo.load("SKU-E", use_snapshot=False)
    for i in range(30):
        loaded = await repo.load("SKU-E", entity=("reservation_id", f"r{i}"))
        assert not loaded.fully_loaded
        assert loaded.reservation(f"r{i}") == full.reservations.get(f"r{i}"), i
        assert loaded.state_dict() == full.state_dict()
    # A reservation opened before the snapshot is released through the keyed load.
    early = await repo.load("SKU-E", entity=("reservation_id", "r2"))
    early.release("r2")
    await repo.save(early)
    again = await repo.load("SKU-E", use_snapshot=False)
    assert "r2" not in again.reservations
    assert again.available + again.reserved + again.sold == again.stocked


async def test_postgres_refuses_a_keyed_read_by_a_field_without_an_index(
    store: EventStore, store_url: str | None
) -> None:
    if store_url is None:
        pytest.skip("the in-memory store reads by any field")
    with pytest.raises(ValueError, match="no keyed reads by 'order_id'"):
        await store.read_stream_keyed("order-1", "order_id", "o-1")


async def test_postgres_answers_a_keyed_read_from_its_index(store_url: str | None) -> None:
    if store_url is None:
        pytest.skip("PostgreSQL only")
    import psycopg

    from eventstore.migrate import psycopg_url
    from eventstore.postgres import _READ_STREAM_KEYED

    async with await psycopg.AsyncConnection.connect(psycopg_url(store_url)) as conn:
        # Why seqscan off: on a small table a scan is cheaper and would be chosen; the
        # question is whether the index can serve the query at all (its predicate
        # proved from the query's condition, its expression the query's).
        await conn.execute("SET enable_seqscan = off")
        for field, sql in _READ_STREAM_KEYED.items():
            cur = await conn.execute("EXPLAIN (FORMAT JSON) " + sql, ("inventory-SKU-K", "r-1", 10))
            row = await cur.fetchone()
            assert row is not None
            assert f"events_{field}_idx" in json.dumps(row[0]), row[0]


async def test_a_snapshot_of_another_schema_is_ignored(store: EventStore) -> None:
    repo = Repository(store, Inventory)
    inv = Inventory("SKU-2")
    inv.register("Gadget", 100)
    inv.add_stock(5)
    await repo.save(inv)
    # A snapshot written by an older aggregate shape: must not be misread.
    await store.save_snapshot(
        Snapshot("inventory-SKU-2", "Inventory", 2, Inventory.snapshot_schema + 1, {"junk": 1})
    )
    loaded = await repo.load("SKU-2")
    assert loaded.available == 5


async def test_a_snapshot_of_another_schema_is_replaced_on_the_first_load(
    store: EventStore,
) -> None:
    repo = Repository(store, Inventory, snapshot_every=5)
    inv = Inventory("SKU-U")
    inv.register("Upgraded", 100)
    for _ in range(7):
        inv.add_stock(1)
    await Repository(store, Inventory).save(inv)  # no snapshot on the way
    # As after an upgrade that changed the aggregate's snapshot shape:
    await store.save_snapshot(
        Snapshot("inventory-SKU-U", "Inventory", 4, Inventory.snapshot_schema - 1, {"old": 1})
    )
    loaded = await repo.load("SKU-U")
    assert loaded.stocked == 7
    snap = await store.load_snapshot("inventory-SKU-U")
    assert snap is not None
    assert (snap.version, snap.schema) == (8, Inventory.snapshot_schema)
    assert snap.state == loaded.snapshot_state()


async def test_saves_with_the_same_id_prefix_are_idempotent(store: EventStore) -> None:
    repo = Repository(store, Inventory)
    first = Inventory("SKU-3")
    first.register("Thing", 10)
    await repo.save(first, id_prefix=("wf-1", "register"))
    retried = Inventory("SKU-3")
    retried.register("Thing", 10)
    result = await repo.save(retried, id_prefix=("wf-1", "register"))
    assert result is not None and result.duplicate
    assert await store.stream_version("inventory-SKU-3") == 1


def raw(stream_id: str, event_type: str, schema_version: int, data: dict) -> RecordedEvent:
    return RecordedEvent(
        event_id=uuid.uuid4(),
        event_type=event_type,
        schema_version=schema_version,
        stream_id=stream_id,
        stream_type="Inventory",
        version=1,
        global_position=0,
        recorded_at=datetime.now(UTC),
        data=data,
        metadata={},
    )


async def insert_raw(store: EventStore, recorded: RecordedEvent) -> RecordedEvent:
    """Store a hand-made row, as old code or a corrupted disk would have left it."""
    if isinstance(store, InMemoryEventStore):
        store.insert_raw(recorded)
    else:
        from eventstore.postgres import PostgresEventStore

        assert isinstance(store, PostgresEventStore)
        async with store.pool.connection() as conn:
            batch = [{"event_id": str(recorded.event_id), "event_type": recorded.event_type,
                      "schema_version": recorded.schema_version, "data": recorded.data,
                      "metadata": {}}]  # fmt: skip
            await conn.execute(
                "SELECT * FROM sagaflow_append(%s, %s, 0, %s, %s::jsonb)",
                (recorded.stream_id, recorded.stream_type, store.epoch, json.dumps(batch)),
            )
    (stored,) = await store.read_stream(recorded.stream_id)
    return stored


async def test_an_old_event_version_is_upcast_on_read(store: EventStore) -> None:
    # StockAdded v0 stored "qty"; the current v1 says "quantity".
    @store.upcasters.register("StockAdded", 0)
    def rename_qty(data: dict) -> dict:
        data["quantity"] = data.pop("qty")
        return data

    stored = await insert_raw(store, raw("inventory-old", "StockAdded", 0, {"qty": 4}))
    assert store.decode(stored) == StockAdded(quantity=4)


async def test_unreadable_events_name_the_stream_and_position(store: EventStore) -> None:
    unknown = await insert_raw(store, raw("inventory-u", "StockTeleported", 1, {}))
    with pytest.raises(UnreadableEvent, match=r"'inventory-u' version 1 .*unknown event type"):
        store.decode(unknown)
    corrupt = await insert_raw(store, raw("inventory-c", "StockAdded", 1, {"quantity": "many"}))
    with pytest.raises(UnreadableEvent, match=r"'inventory-c' .*corrupt StockAdded payload"):
        store.decode(corrupt)
    no_path = await insert_raw(store, raw("inventory-n", "StockAdded", 0, {"qty": 1}))
    with pytest.raises(UnreadableEvent, match="no upcaster from StockAdded v0 to v1"):
        store.decode(no_path)
