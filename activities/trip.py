"""The tutorial saga's participants: a simulated airline, hotel, car rental, bank and
mailer, each an idempotent activity that records its facts on ``trip-<trip_id>``.

The contracts (names, argument and result types) are the stubs in
``workflows/trip_saga.py``; these are the implementations under the same names.
Event ids derive from the workflow id and the activity, so a retried activity never
records a fact twice; a compensation whose booking never happened records nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.wiring import ActivityDeps
from domain.events import DomainEvent
from eventstore import ANY_VERSION, EventStore, NewEvent, deterministic_event_id
from workflows.trip_saga import Booking, Itinerary, Simulation, TripInput

log = logging.getLogger(__name__)

TRIP_REFUSED = "TripRefused"
"""ApplicationError type of a participant's refusal (no seats, card declined...)."""


def trip_stream(trip_id: str) -> str:
    """Stream id of one trip's facts."""
    return f"trip-{trip_id}"


class TripBookingMade(DomainEvent):
    """A participant (airline, hotel, car rental) confirmed a booking."""

    trip_id: str
    participant: str
    reference: str


class TripBookingCancelled(DomainEvent):
    """A participant cancelled a booking (compensation)."""

    trip_id: str
    participant: str
    reference: str


class TravelerCharged(DomainEvent):
    """The traveler paid for the trip (the pivot)."""

    trip_id: str
    traveler_id: str
    amount_cents: int


class TravelerRefunded(DomainEvent):
    """A charge was given back."""

    trip_id: str
    amount_cents: int


class ItinerarySent(DomainEvent):
    """The itinerary went out to the traveler."""

    trip_id: str
    traveler_id: str
    references: list[str]


class TripParticipants:
    """The simulated participants; every method is one activity."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    # --- plumbing -------------------------------------------------------------------

    @staticmethod
    async def _simulate(sim: Simulation) -> None:
        """Apply the input's simulation to the running activity (see ``Simulation``)."""
        info = activity.info()
        step = info.activity_type
        if sim.down_at == step and info.attempt <= sim.down_attempts:
            # Retryable on purpose: an outage is waited out by the step's retry policy.
            raise RuntimeError(f"simulated outage: {step} attempt {info.attempt}")
        if sim.fail_at == step:
            # Non-retryable: the same request would get the same answer.
            raise ApplicationError(
                f"{step} refused (simulated)", type=TRIP_REFUSED, non_retryable=True
            )
        if sim.slow_at == step:
            await asyncio.sleep(sim.slow_s)

    async def _facts(self, trip_id: str) -> list[DomainEvent]:
        events = await self.store.read_stream(trip_stream(trip_id))
        return [_EVENTS[e.event_type].model_validate(e.data) for e in events]

    async def _record(self, trip_id: str, event: DomainEvent) -> None:
        info = activity.info()
        # Why ANY_VERSION: each participant's facts are written by its own activity,
        # once (the deterministic id makes a retried append a no-op); the stream is
        # the trip's log, with no invariant spanning participants to protect.
        await self.store.append(
            trip_stream(trip_id),
            [
                NewEvent(
                    event,
                    event_id=deterministic_event_id(info.workflow_id, info.activity_type, 0),
                    metadata={
                        "correlation_id": info.workflow_id,
                        "causation_id": f"{info.workflow_id}/{info.activity_type}",
                        "user_id": "",
                        "workflow_id": info.workflow_id,
                        "activity_id": info.activity_id,
                    },
                )
            ],
            ANY_VERSION,
            stream_type="Trip",
        )

    async def _booking(self, trip_id: str, participant: str) -> str | None:
        """The open booking reference of ``participant`` (None: none, or cancelled)."""
        reference = None
        for fact in await self._facts(trip_id):
            if isinstance(fact, TripBookingMade) and fact.participant == participant:
                reference = fact.reference
            elif isinstance(fact, TripBookingCancelled) and fact.participant == participant:
                reference = None
        return reference

    async def _book(self, trip: TripInput, participant: str) -> Booking:
        await self._simulate(trip.simulation)
        existing = await self._booking(trip.trip_id, participant)
        if existing is not None:
            return Booking(participant, existing)  # a retry after the commit
        reference = f"{participant[:3].upper()}-{_digest(trip.trip_id, participant)}"
        await self._record(trip.trip_id, TripBookingMade(
            trip_id=trip.trip_id, participant=participant, reference=reference
        ))  # fmt: skip
        return Booking(participant, reference)

    async def _cancel(self, trip: TripInput, participant: str) -> bool:
        await self._simulate(trip.simulation)
        reference = await self._booking(trip.trip_id, participant)
        if reference is None:
            return False  # never booked (or already cancelled): nothing to undo
        await self._record(trip.trip_id, TripBookingCancelled(
            trip_id=trip.trip_id, participant=participant, reference=reference
        ))  # fmt: skip
        return True

    # --- the participants -------------------------------------------------------------

    @activity.defn(name="book_flight")
    async def book_flight(self, trip: TripInput) -> Booking:
        """The airline books a seat."""
        return await self._book(trip, "airline")

    @activity.defn(name="cancel_flight")
    async def cancel_flight(self, trip: TripInput) -> bool:
        """The airline cancels the seat, if it was booked."""
        return await self._cancel(trip, "airline")

    @activity.defn(name="book_hotel")
    async def book_hotel(self, trip: TripInput) -> Booking:
        """The hotel books a room."""
        return await self._book(trip, "hotel")

    @activity.defn(name="cancel_hotel")
    async def cancel_hotel(self, trip: TripInput) -> bool:
        """The hotel cancels the room, if it was booked."""
        return await self._cancel(trip, "hotel")

    @activity.defn(name="book_car")
    async def book_car(self, trip: TripInput) -> Booking:
        """The car rental books a car."""
        return await self._book(trip, "car-rental")

    @activity.defn(name="cancel_car")
    async def cancel_car(self, trip: TripInput) -> bool:
        """The car rental cancels the car, if it was booked."""
        return await self._cancel(trip, "car-rental")

    @activity.defn(name="charge_traveler")
    async def charge_traveler(self, trip: TripInput) -> int:
        """The bank charges the trip's total (once per trip)."""
        await self._simulate(trip.simulation)
        if any(isinstance(f, TravelerCharged) for f in await self._facts(trip.trip_id)):
            return trip.total_cents  # a retry after the commit
        await self._record(trip.trip_id, TravelerCharged(
            trip_id=trip.trip_id, traveler_id=trip.traveler_id, amount_cents=trip.total_cents
        ))  # fmt: skip
        return trip.total_cents

    @activity.defn(name="refund_traveler")
    async def refund_traveler(self, trip: TripInput) -> int:
        """The bank refunds the charge, if one was recorded and not refunded yet."""
        await self._simulate(trip.simulation)
        facts = await self._facts(trip.trip_id)
        charged = sum(f.amount_cents for f in facts if isinstance(f, TravelerCharged))
        refunded = sum(f.amount_cents for f in facts if isinstance(f, TravelerRefunded))
        if charged - refunded <= 0:
            return 0
        await self._record(
            trip.trip_id, TravelerRefunded(trip_id=trip.trip_id, amount_cents=charged - refunded)
        )
        return charged - refunded

    @activity.defn(name="send_itinerary")
    async def send_itinerary(self, itinerary: Itinerary) -> None:
        """The mailer sends the itinerary (logged), then records ItinerarySent once."""
        await self._simulate(itinerary.simulation)
        log.info("itinerary for %s: %s", itinerary.traveler_id, ", ".join(itinerary.references))
        await self._record(itinerary.trip_id, ItinerarySent(
            trip_id=itinerary.trip_id,
            traveler_id=itinerary.traveler_id,
            references=itinerary.references,
        ))  # fmt: skip


_EVENTS: dict[str, type[DomainEvent]] = {
    cls.event_type: cls
    for cls in (TripBookingMade, TripBookingCancelled, TravelerCharged, TravelerRefunded,
                ItinerarySent)
}  # fmt: skip


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8].upper()


def build_activities(deps: ActivityDeps) -> list[Callable[..., Any]]:
    """Every activity of the trip saga, bound to the worker's event store."""
    p = TripParticipants(deps.store)
    return [
        p.book_flight, p.cancel_flight, p.book_hotel, p.cancel_hotel, p.book_car,
        p.cancel_car, p.charge_traveler, p.refund_traveler, p.send_itinerary,
    ]  # fmt: skip
