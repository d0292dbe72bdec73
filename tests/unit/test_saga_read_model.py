"""The saga read model's fold (``projections.models.evolve_saga``): pure, no I/O."""

from __future__ import annotations

import pytest

from domain import saga_events as sev
from eventstore import ANY_VERSION, InMemoryEventStore, NewEvent
from projections import models as m


async def _fold(*events, row=None):
    store = InMemoryEventStore()
    await store.append("saga-s1", [NewEvent(e) for e in events], ANY_VERSION, stream_type="Saga")
    for recorded in await store.read_stream("saga-s1"):
        row = m.evolve_saga(row, recorded, store.decode(recorded))
    return row


STARTED = sev.SagaStarted(
    saga_id="s1", saga_type="OrderSaga", order_id="s1", keys={"CustomerId": "c1"}
)


async def test_a_started_saga_is_running_with_its_business_keys():
    row = await _fold(STARTED)
    assert (row["status"], row["keys"], row["current_step"]) == (
        "running",
        {"CustomerId": "c1"},
        "",
    )
    assert row["parked"] == [] and row["failure"] is None


async def test_completed_steps_move_the_current_step():
    row = await _fold(
        STARTED,
        sev.SagaStepCompleted(saga_id="s1", step="reserve_stock"),
        sev.SagaStepCompleted(saga_id="s1", step="charge_payment"),
    )
    assert (row["status"], row["current_step"]) == ("running", "charge_payment")


@pytest.mark.parametrize(("status", "expected"), [("", "completed"), ("awaiting_shipment",) * 2])
async def test_completion_takes_the_status_the_saga_reports(status, expected):
    row = await _fold(STARTED, sev.SagaCompleted(saga_id="s1", status=status))
    assert row["status"] == expected


async def test_a_status_change_of_the_sagas_own_flow_is_the_status():
    row = await _fold(
        STARTED,
        sev.SagaCompleted(saga_id="s1", status="awaiting_shipment"),
        sev.SagaStatusChanged(saga_id="s1", status="shipped", step="ship"),
    )
    assert (row["status"], row["current_step"]) == ("shipped", "ship")


async def test_a_parked_compensation_is_listed_with_phase_error_and_time():
    row = await _fold(STARTED, sev.CompensationParked(saga_id="s1", step="refund", error="boom"))
    assert row["status"] == m.SAGA_PARKED
    assert row["failure"] == "boom"
    [entry] = row["parked"]
    assert {k: entry[k] for k in ("step", "phase", "error", "escalated")} == {
        "step": "refund",
        "phase": "compensation",
        "error": "boom",
        "escalated": False,
    }
    assert entry["parked_at"].startswith(str(row["updated_at"].date()))
    assert row["parked_steps"] == ["refund"]


async def test_a_parked_forward_step_is_in_the_forward_phase_and_resumes_running():
    row = await _fold(
        STARTED,
        sev.SagaCompleted(saga_id="s1", status="awaiting_shipment"),
        sev.StepParked(saga_id="s1", step="ship", error="carrier down"),
    )
    assert (row["status"], row["parked"][0]["phase"]) == (m.SAGA_PARKED, "forward")
    row = await _fold(
        sev.CompensationResolved(saga_id="s1", step="ship", resolution="retried"), row=row
    )
    assert (row["status"], row["parked"]) == ("running", [])


async def test_a_step_parked_again_after_a_failed_retry_is_listed_once():
    row = await _fold(
        STARTED,
        sev.CompensationParked(saga_id="s1", step="refund", error="boom"),
        sev.CompensationRetried(saga_id="s1", step="refund", operator="ops"),
        sev.CompensationParked(saga_id="s1", step="refund", error="boom again"),
    )
    assert [(p["step"], p["error"]) for p in row["parked"]] == [("refund", "boom again")]


async def test_resolving_the_last_parked_step_resumes_compensating_then_compensated():
    row = await _fold(
        STARTED,
        sev.CompensationParked(saga_id="s1", step="refund", error="boom"),
        sev.CompensationParked(saga_id="s1", step="release", error="down"),
        sev.CompensationResolved(saga_id="s1", step="refund", resolution="retried"),
    )
    assert (row["status"], row["parked_steps"]) == (m.SAGA_PARKED, ["release"])
    row = await _fold(
        sev.CompensationSkipped(saga_id="s1", step="release", operator="ops", note="lost"),
        row=row,
    )
    assert (row["status"], row["parked"]) == ("compensating", [])
    row = await _fold(
        sev.SagaCompensated(saga_id="s1", reason="declined", compensated_steps=["refund"]),
        row=row,
    )
    assert (row["status"], row["reason"], row["failure"]) == ("compensated", "declined", "down")


async def test_compensated_with_a_step_still_parked_stays_parked():
    row = await _fold(
        STARTED,
        sev.CompensationParked(saga_id="s1", step="refund", error="boom"),
        sev.SagaCompensated(saga_id="s1", reason="declined", compensated_steps=[]),
    )
    assert row["status"] == m.SAGA_PARKED


async def test_an_escalation_flags_its_parked_step_only():
    row = await _fold(
        STARTED,
        sev.CompensationParked(saga_id="s1", step="refund", error="boom"),
        sev.CompensationParked(saga_id="s1", step="release", error="down"),
        sev.CompensationEscalated(saga_id="s1", step="refund", parked_for_s=60),
    )
    assert [(p["step"], p["escalated"]) for p in row["parked"]] == [
        ("refund", True),
        ("release", False),
    ]
    assert row["escalated_steps"] == ["refund"]
    row = await _fold(
        sev.CompensationResolved(saga_id="s1", step="refund", resolution="manual"), row=row
    )
    assert row["escalated_steps"] == []


async def test_an_event_before_saga_started_is_a_projection_error():
    with pytest.raises(m.ProjectionError):
        await _fold(sev.SagaStepCompleted(saga_id="s1", step="x"))
