"""The tutorial saga: book a trip (flight, hotel, car), charge the traveler, send the
itinerary. Written against the engine's public API alone; ``docs/sagas.md`` walks
through it and a test checks that its excerpts are this file's code.

Everything a saga type needs on the workflow side is here: the input and result
models, the activity contracts (stubs; the implementations live in
``activities/trip.py`` under the same names), the ``TRIP`` definition and the
workflow class built by ``linear_saga``. No I/O: the workflow sandbox imports this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import activity

from workflows.definition import (
    COMPENSATABLE,
    PIVOT,
    RETRIABLE,
    BusinessKey,
    SagaDefinition,
    Step,
    StepContext,
    StepOptions,
)
from workflows.engine import linear_saga
from workflows.models import RetryKnobs

TRIP_SAGA = "TripSaga"
"""The workflow type name (stable: renaming it breaks running sagas and replay)."""


# --- input and result -------------------------------------------------------------


@dataclass(frozen=True)
class Simulation:
    """How the simulated participants behave (demos and tests; all off by default).

    ``fail_at``: the participant of this step refuses (a business failure, never
    retried). ``down_at``: it is unreachable for its first ``down_attempts`` attempts
    (a technical failure, retried). ``slow_at``: it answers after ``slow_s`` seconds.
    """

    fail_at: str = ""
    down_at: str = ""
    down_attempts: int = 2
    slow_at: str = ""
    slow_s: float = 0.0


@dataclass(frozen=True)
class TripInput:
    """A trip to book from quoted offers (prices in cents, fixed when quoted)."""

    trip_id: str
    traveler_id: str
    origin: str
    destination: str
    depart_on: str
    return_on: str
    flight_cents: int
    hotel_cents: int
    car_cents: int
    simulation: Simulation = field(default_factory=Simulation)

    @property
    def total_cents(self) -> int:
        """What the traveler is charged."""
        return self.flight_cents + self.hotel_cents + self.car_cents


@dataclass(frozen=True)
class Booking:
    """A participant's confirmation."""

    participant: str
    reference: str


@dataclass(frozen=True)
class Itinerary:
    """What ``send_itinerary`` sends: the trip and its booking references."""

    trip_id: str
    traveler_id: str
    references: list[str]
    simulation: Simulation = field(default_factory=Simulation)


@dataclass(frozen=True)
class TripResult:
    """How the trip saga ended: ``completed``, or ``compensated`` with the reason."""

    saga_id: str
    status: str
    reason: str = ""
    compensated_steps: list[str] = field(default_factory=list)


# --- activity contracts (implemented in activities/trip.py) -------------------------

_IMPLEMENTED = "implemented in activities/trip.py and registered by the worker"


@activity.defn(name="book_flight")
async def book_flight(trip: TripInput) -> Booking:
    """Book the flight with the airline."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="cancel_flight")
async def cancel_flight(trip: TripInput) -> bool:
    """Cancel the flight (compensation); False when it was never booked."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="book_hotel")
async def book_hotel(trip: TripInput) -> Booking:
    """Book the hotel."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="cancel_hotel")
async def cancel_hotel(trip: TripInput) -> bool:
    """Cancel the hotel (compensation); False when it was never booked."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="book_car")
async def book_car(trip: TripInput) -> Booking:
    """Book the rental car."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="cancel_car")
async def cancel_car(trip: TripInput) -> bool:
    """Cancel the rental car (compensation); False when it was never booked."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="charge_traveler")
async def charge_traveler(trip: TripInput) -> int:
    """Charge the trip's total; returns the cents charged."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="refund_traveler")
async def refund_traveler(trip: TripInput) -> int:
    """Refund a charge whose outcome was unknown; returns the cents refunded (0: none)."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="send_itinerary")
async def send_itinerary(itinerary: Itinerary) -> None:
    """Send the itinerary to the traveler."""
    raise NotImplementedError(_IMPLEMENTED)


# --- the definition -----------------------------------------------------------------

BOOKING = StepOptions(
    retry=RetryKnobs(initial_interval_s=0.2, backoff=2.0, max_interval_s=5.0, max_attempts=3),
    start_to_close_s=10.0,
)
"""Participant calls: regular activities (remote systems), three attempts."""

UNDO = StepOptions(
    retry=RetryKnobs(initial_interval_s=0.2, backoff=2.0, max_interval_s=5.0, max_attempts=5),
    start_to_close_s=10.0,
)
"""Compensations: more patience; when they still fail, the engine parks them."""


def _itinerary(ctx: StepContext) -> Itinerary:
    # Earlier steps' results arrive decoded into their declared types (Booking).
    bookings = [ctx.results[name] for name in ("book_flight", "book_hotel", "book_car")]
    trip = ctx.input
    return Itinerary(
        trip.trip_id, trip.traveler_id, [b.reference for b in bookings], trip.simulation
    )


def _summary(trip: TripInput) -> str:
    return (
        f"trip {trip.trip_id}: {trip.origin} -> {trip.destination}, "
        f"{trip.depart_on} to {trip.return_on}, traveler {trip.traveler_id}"
    )


TRIP = SagaDefinition(
    name=TRIP_SAGA,
    input=TripInput,
    result=TripResult,
    description="Book flight, hotel and car; charge the traveler; send the itinerary.",
    steps=(
        # Three participants that know nothing of each other: their cancellations
        # commute, so they may run together (parallel=True).
        Step(
            "book_flight",
            COMPENSATABLE,
            book_flight,
            cancel_flight,
            parallel=True,
            options=BOOKING,
            compensation_options=UNDO,
        ),
        Step(
            "book_hotel",
            COMPENSATABLE,
            book_hotel,
            cancel_hotel,
            parallel=True,
            options=BOOKING,
            compensation_options=UNDO,
        ),
        Step(
            "book_car",
            COMPENSATABLE,
            book_car,
            cancel_car,
            parallel=True,
            options=BOOKING,
            compensation_options=UNDO,
        ),
        # The pivot: once the money is taken the trip stands. Its compensation runs
        # only if the charge's own outcome is unknown (it timed out after the bank
        # may have taken the money); a committed pivot is never undone.
        Step(
            "charge_traveler",
            PIVOT,
            charge_traveler,
            refund_traveler,
            options=BOOKING,
            compensation_options=UNDO,
        ),
        # After the pivot: retried until it succeeds, parked for an operator if it
        # is refused, never compensated.
        Step("send_itinerary", RETRIABLE, send_itinerary, build=_itinerary, options=BOOKING),
    ),
    keys=(
        BusinessKey("TravelerId", "keyword", lambda trip: trip.traveler_id),
        BusinessKey("TripTotal", "float", lambda trip: trip.total_cents / 100),
    ),
    summary=_summary,
    saga_id=lambda trip: trip.trip_id,
)
"""The trip saga's declaration (registered in ``workflows.registry``)."""

TripSagaWorkflow = linear_saga(TRIP, "TripSagaWorkflow")
"""The trip saga's workflow: the steps above, in order (a linear saga)."""
