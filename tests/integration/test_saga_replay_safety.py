"""A run and its replay take the same path when a query moves a local activity's result.

The SDK core answers a query that came with a workflow task while a local activity's
result is still pending by completing that task and forcing a new one: the run sees
the result in the new task, a replay (which has no queries) in the old one. So the
history length read after a local activity differs between the two. The first
generation of the saga's cancel rule and durable barrier read it there; the
reliability suite's worker kills caught a cancel sent with the start and a status
poll during the first journal write (``Non-deprecated patch marker encountered for
change sagaflow-durable-barrier-1``; the run was stuck, its compensations done).
Here the same shape is made on purpose: the workflow's first task carries the start,
a cancel and a query, and the query is slowed so the first journal write (a local
activity) finishes while it is being answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer

from application.orders import start_order
from domain.commands import OrderLine, PlaceOrder
from domain.saga_events import saga_stream
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from tests.replay.saga_fixtures import check_invariants, event_types, fast_settings
from tests.replay.saga_fixtures import stock_catalogue as catalogue
from worker import build_worker
from workflows.client import OrderRequestRefused, cancel_order, get_status
from workflows.engine import STATUS_QUERY
from workflows.models import ORDER_SAGA, OrderSagaInput, OrderSagaResult, SagaStatus
from workflows.order_saga import OrderSagaWorkflow

pytestmark = pytest.mark.integration

STOCK = {"A": (1000, 10)}
QUERY_BUSY_S = 0.5


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A Temporal client on the session's dev server."""
    assert settings.temporal_address
    yield await Client.connect(settings.temporal_address)


def _spin(seconds: float) -> None:
    """Busy for about ``seconds`` of CPU without a clock (the sandbox allows none)."""
    for _ in range(int(seconds * 4_000_000)):
        pass


@workflow.defn(name=ORDER_SAGA)
class SlowStatusOrderSaga(OrderSagaWorkflow):
    """The order saga with a slow status query: the first journal write (a local
    activity of a few milliseconds) finishes while the query is being answered."""

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderSagaResult:
        """Unchanged run."""
        return await super().run(input)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> SagaStatus:
        """The status, after a busy wait."""
        _spin(QUERY_BUSY_S)
        return super().status()


async def _tasks_before_first_timer(handle: WorkflowHandle[Any, Any]) -> list[list[str]]:
    """The commands (markers by name) of each workflow task completion before the
    first timer or regular activity: what the run did between durable events."""
    tasks: list[list[str]] = []
    async for event in handle.fetch_history_events():
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        if kind in ("TIMER_STARTED", "ACTIVITY_TASK_SCHEDULED"):
            break
        if kind == "WORKFLOW_TASK_COMPLETED":
            tasks.append([])
        elif event.HasField("marker_recorded_event_attributes") and tasks:
            tasks[-1].append(event.marker_recorded_event_attributes.marker_name)
    return tasks


async def test_a_query_that_moves_a_local_result_to_a_new_task_does_not_change_the_replay(
    client: Client, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    await catalogue(pg_store, STOCK)
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"o-{unique}"
    cmd = PlaceOrder(order_id=order_id, customer_id="c-1", lines=[OrderLine(sku="A", quantity=1)])
    # No worker yet: the start, the cancel and the query all wait for the first task.
    handle = await start_order(client, cfg, cmd, store=pg_store)
    cancel = asyncio.create_task(cancel_order(client, order_id, "changed my mind"))
    query = asyncio.create_task(get_status(client, order_id))
    await asyncio.sleep(1.0)
    async with build_worker(client, cfg, pg_store, workflows=[SlowStatusOrderSaga]):
        try:
            outcome = await asyncio.wait_for(cancel, 60)
        except OrderRequestRefused as refused:
            outcome = f"refused: {refused}"
        await asyncio.wait_for(query, 60)
        status = await get_status(client, order_id)
        tasks = await _tasks_before_first_timer(handle)
        history = await handle.fetch_history()
        if outcome == "compensated":
            await handle.result()
        else:
            await handle.terminate("test over")
    # The shape asked for: the first task completed with the journal write's marker
    # and nothing after it; the saga went on in a task no durable event started.
    assert tasks[0][-1] == "core_local_activity", tasks
    assert len(tasks) >= 2, tasks
    # The run replays against the code that ran it.
    replay = await Replayer(workflows=[OrderSagaWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replay.replay_failure is None, replay.replay_failure
    # The store says what Temporal says; nothing leaked.
    journal = await event_types(pg_store, saga_stream(order_id))
    if outcome == "compensated":
        assert status.status == "compensated"
        assert journal[-1] == "SagaCompensated", journal
    else:
        assert "SagaCompensated" not in journal, (outcome, journal)
    figures = await check_invariants(pg_store, STOCK, [order_id])
    assert figures["levels"]["A"][1] == (0 if outcome == "compensated" else 1), figures
