"""The request coalescer: one query per loop turn, single flight, never an old answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from api.coalesce import Coalescer


class FakeTable:
    """A table whose fetches are recorded and can be held open."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.fetches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def fetch(self, keys: Sequence[str]) -> dict[str, int]:
        self.fetches.append(list(keys))
        snapshot = dict(self.rows)  # what the query read, at the moment it started
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {k: snapshot[k] for k in keys if k in snapshot}


async def _until(condition: object) -> None:
    """Let the loop turn until ``condition()`` holds (a few turns at most)."""
    for _ in range(20):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_concurrent_lookups_share_one_fetch_and_same_keys_fly_once() -> None:
    table = FakeTable()
    table.rows = {"a": 1, "b": 2}
    co: Coalescer[str, int] = Coalescer(table.fetch)
    results = await asyncio.gather(*(co.get(k) for k in ["a", "b", "a", "zz", "a"]))
    assert results == [1, 2, 1, None, 1]
    assert table.fetches == [["a", "b", "zz"]]


async def test_a_lookup_arriving_during_a_fetch_waits_for_a_fresh_one() -> None:
    table = FakeTable()
    table.rows = {"a": 1}
    table.gate = asyncio.Event()
    co: Coalescer[str, int] = Coalescer(table.fetch)
    first = asyncio.create_task(co.get("a"))
    await _until(lambda: table.fetches == [["a"]])  # the first batch is in flight
    table.rows["a"] = 2  # a write lands after the first query read the row
    second = asyncio.create_task(co.get("a"))
    await _until(lambda: len(table.fetches) == 2)
    table.gate.set()
    # The late reader must not take the in-flight answer, read before its write.
    assert await first == 1
    assert await second == 2
    assert table.fetches == [["a"], ["a"]]


async def test_a_failed_fetch_fails_its_batch_and_the_next_batch_recovers() -> None:
    table = FakeTable()
    table.rows = {"a": 1}
    table.fail = RuntimeError("database down")
    co: Coalescer[str, int] = Coalescer(table.fetch)
    outcomes = await asyncio.gather(co.get("a"), co.get("b"), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    table.fail = None
    assert await co.get("a") == 1


async def test_a_cancelled_request_does_not_cancel_the_others_in_its_batch() -> None:
    table = FakeTable()
    table.rows = {"a": 1}
    table.gate = asyncio.Event()
    co: Coalescer[str, int] = Coalescer(table.fetch)
    leaving = asyncio.create_task(co.get("a"))
    staying = asyncio.create_task(co.get("a"))
    await _until(lambda: table.fetches == [["a"]])
    leaving.cancel()
    table.gate.set()
    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_full_batch_is_sent_at_once() -> None:
    table = FakeTable()
    table.rows = {str(i): i for i in range(10)}
    co: Coalescer[str, int] = Coalescer(table.fetch, max_batch=4)
    results = await asyncio.gather(*(co.get(str(i)) for i in range(10)))
    assert results == list(range(10))
    assert [len(f) for f in table.fetches] == [4, 4, 2]
