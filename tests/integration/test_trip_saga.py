"""The tutorial saga (docs/sagas.md) on the Temporal dev server with the real event store.

Runs the tutorial's own code (``workflows/trip_saga.py``, ``activities/trip.py``)
through the worker, started with the generic ``start_saga``; each test checks the
trip's stream and the saga's journal. With ``SAGAFLOW_RECORD_HISTORIES=1`` each path's
history is saved under ``tests/replay/histories/trip/``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from activities.trip import trip_stream
from domain.saga_events import saga_stream
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from tests.replay.saga_fixtures import RECORD_ENV, event_types
from worker import build_worker
from workflows.client import cancel_saga, saga_plan, saga_status, start_saga
from workflows.models import SagaPlan, SagaStatus
from workflows.registry import default_registry
from workflows.trip_saga import TRIP_SAGA, Simulation, TripInput, TripResult

pytestmark = pytest.mark.integration

TRIP_HISTORIES = Path(__file__).parents[1] / "replay" / "histories" / "trip"


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A Temporal client on the session's dev server."""
    assert settings.temporal_address
    yield await Client.connect(settings.temporal_address)


def trip(trip_id: str, **simulation: Any) -> TripInput:
    """Lisbon to Oslo for traveler t-1: 350.00 + 240.00 + 90.00."""
    return TripInput(
        trip_id=trip_id,
        traveler_id="t-1",
        origin="LIS",
        destination="OSL",
        depart_on="2027-03-01",
        return_on="2027-03-04",
        flight_cents=35000,
        hotel_cents=24000,
        car_cents=9000,
        simulation=Simulation(**simulation),
    )


async def run_trip(
    client: Client, settings: Settings, store: PostgresEventStore, saga_input: TripInput
) -> tuple[TripResult, WorkflowHandle[Any, Any], SagaStatus, SagaPlan]:
    """Start the trip saga on a worker of its own; its result, then status and plan
    (queried while the worker still runs: a query needs one)."""
    cfg = settings.model_copy(update={"task_queue": f"q-{saga_input.trip_id}"})
    saga_id = saga_input.trip_id
    async with build_worker(client, cfg, store):
        handle = await start_saga(
            client, cfg, default_registry().get(TRIP_SAGA), saga_input, saga_id=saga_id
        )
        result = await typed(client, handle).result()
        status, plan = await saga_status(client, saga_id), await saga_plan(client, saga_id)
    return result, handle, status, plan


def typed(client: Client, handle: WorkflowHandle[Any, Any]) -> WorkflowHandle[Any, TripResult]:
    """The handle with the result decoded as TripResult (start_saga starts by type name)."""
    return client.get_workflow_handle(handle.id, result_type=TripResult)


async def record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Save the history as ``histories/trip/<name>.json`` when recording is on."""
    if os.environ.get(RECORD_ENV) != "1":
        return
    TRIP_HISTORIES.mkdir(parents=True, exist_ok=True)
    (TRIP_HISTORIES / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def facts(store: PostgresEventStore, trip_id: str) -> list[tuple[str, str]]:
    """The trip's facts as (event type, participant) pairs."""
    return [
        (e.event_type, str(e.data.get("participant", "")))
        for e in await store.read_stream(trip_stream(trip_id))
    ]


async def test_happy_path_books_everything_charges_and_sends_the_itinerary(
    client: Client, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    result, handle, status, plan = await run_trip(
        client, settings, pg_store, trip(f"trip-{unique}")
    )
    assert result.status == "completed"
    assert await facts(pg_store, f"trip-{unique}") == [
        ("TripBookingMade", "airline"), ("TripBookingMade", "hotel"),
        ("TripBookingMade", "car-rental"), ("TravelerCharged", ""), ("ItinerarySent", ""),
    ]  # fmt: skip
    sent = (await pg_store.read_stream(trip_stream(f"trip-{unique}")))[-1]
    assert len(sent.data["references"]) == 3
    assert sent.metadata["workflow_id"] == f"trip-{unique}"
    assert status.saga_type == TRIP_SAGA
    assert status.pivot_committed
    assert status.keys == {"TravelerId": "t-1", "TripTotal": "680.0"}
    assert plan.compensation == []
    assert (await event_types(pg_store, saga_stream(f"trip-{unique}")))[-1] == "SagaCompleted"
    await record(handle, "happy_path")


async def test_hotel_refusal_cancels_the_flight_and_never_books_the_car(
    client: Client, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    result, handle, _, _ = await run_trip(
        client, settings, pg_store, trip(f"trip-{unique}", fail_at="book_hotel")
    )
    assert result.status == "compensated"
    assert result.reason.startswith("step book_hotel failed: TripRefused")
    # The hotel's compensation was registered before it ran, so it runs too: a no-op.
    assert result.compensated_steps == ["book_hotel", "book_flight"]
    assert await facts(pg_store, f"trip-{unique}") == [
        ("TripBookingMade", "airline"),
        ("TripBookingCancelled", "airline"),
    ]
    assert (await event_types(pg_store, saga_stream(f"trip-{unique}")))[-1] == "SagaCompensated"
    await record(handle, "hotel_refused")


async def test_refused_charge_compensates_every_booking(
    client: Client, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    result, handle, _, _ = await run_trip(
        client, settings, pg_store, trip(f"trip-{unique}", fail_at="charge_traveler")
    )
    assert result.status == "compensated"
    # The refund first (nothing to refund), then the three cancellations together.
    assert result.compensated_steps[0] == "charge_traveler"
    assert sorted(result.compensated_steps[1:]) == ["book_car", "book_flight", "book_hotel"]
    found = await facts(pg_store, f"trip-{unique}")
    assert found[:3] == [
        ("TripBookingMade", "airline"),
        ("TripBookingMade", "hotel"),
        ("TripBookingMade", "car-rental"),
    ]
    assert sorted(found[3:]) == [
        ("TripBookingCancelled", "airline"),
        ("TripBookingCancelled", "car-rental"),
        ("TripBookingCancelled", "hotel"),
    ]
    await record(handle, "charge_refused")


async def test_mailer_outage_after_the_pivot_retries_forward_and_compensates_nothing(
    client: Client, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    result, handle, _, _ = await run_trip(
        client,
        settings,
        pg_store,
        trip(f"trip-{unique}", down_at="send_itinerary", down_attempts=4),
    )
    assert result.status == "completed"
    found = [kind for kind, _ in await facts(pg_store, f"trip-{unique}")]
    assert found[-2:] == ["TravelerCharged", "ItinerarySent"]
    assert "TripBookingCancelled" not in found
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) == 5  # four outages, then the fifth attempt got through
    await record(handle, "itinerary_retried")


async def test_cancel_between_steps_undoes_what_was_booked_and_charges_nothing(
    client: Client, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    trip_id = f"trip-{unique}"
    saga_input = trip(trip_id, slow_at="book_car", slow_s=1.5)
    cfg = settings.model_copy(update={"task_queue": f"q-{trip_id}"})
    async with build_worker(client, cfg, pg_store):
        handle = await start_saga(
            client, cfg, default_registry().get(TRIP_SAGA), saga_input, saga_id=trip_id
        )
        await wait_for_step(client, trip_id, "book_car")
        assert (await saga_plan(client, trip_id)).compensation == [
            ["book_car", "book_hotel", "book_flight"]
        ]
        # Accepted while the car is being booked; honoured before the charge.
        assert await cancel_saga(client, trip_id, "traveler changed plans") == "compensated"
        result = await typed(client, handle).result()
    assert result.reason == "cancelled: traveler changed plans"
    found = await facts(pg_store, trip_id)
    assert ("TravelerCharged", "") not in found
    assert sorted(found[3:]) == [
        ("TripBookingCancelled", "airline"),
        ("TripBookingCancelled", "car-rental"),
        ("TripBookingCancelled", "hotel"),
    ]
    await record(handle, "cancelled_between_steps")


async def wait_for_step(client: Client, saga_id: str, step: str) -> SagaStatus:
    """Poll the status query until the saga runs ``step``."""
    for _ in range(200):
        try:
            status = await saga_status(client, saga_id)
        except Exception:
            status = None
        if status is not None and status.current_step == step:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"saga {saga_id} never ran {step}")
