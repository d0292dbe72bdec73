"""Recorded histories of every trip-saga path replay against the tutorial's code.

Recorded by ``tests/integration/test_trip_saga.py`` with ``SAGAFLOW_RECORD_HISTORIES=1``
(``docs/sagas.md``, "Versioning a running saga"). The control: the same definition
with two steps swapped must fail replay, so a passing replay means something.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from temporalio.worker import Replayer

from workflows.engine import linear_saga
from workflows.replay import load_history, replay_history_file
from workflows.trip_saga import TRIP, TripSagaWorkflow

ROOT = Path(__file__).parent / "histories" / "trip"
CURRENT = sorted(ROOT.glob("*.json"))
#: recorded with the engine's second generation (before ``sagaflow-engine-3``)
ENGINE_2 = sorted((ROOT / "engine_2").glob("*.json"))
HISTORIES = CURRENT + ENGINE_2
EXPECTED_PATHS = {
    "happy_path",
    "hotel_refused",
    "charge_refused",
    "itinerary_retried",
    "cancelled_between_steps",
}

_flight, _hotel, *_rest = TRIP.steps
SwappedTripSaga = linear_saga(replace(TRIP, steps=(_hotel, _flight, *_rest)), "SwappedTripSaga")
"""The control: the hotel booked before the flight."""


def test_a_history_is_kept_for_every_trip_path() -> None:
    assert {path.stem for path in CURRENT} == EXPECTED_PATHS
    assert {path.stem for path in ENGINE_2} == EXPECTED_PATHS


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_recorded_trip_history_replays_against_current_code(path: Path) -> None:
    await replay_history_file(path, [TripSagaWorkflow])


async def test_trip_saga_with_two_steps_swapped_fails_replay() -> None:
    history = load_history(ROOT / "happy_path.json")
    result = await Replayer(workflows=[SwappedTripSaga]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
