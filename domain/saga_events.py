"""Saga and notification events: the saga's own facts, for projections and operators.

Stream ``saga-<saga_id>`` (stream type ``Saga``) records how a saga went; stream
``notification-<order_id>`` (stream type ``Notification``) records what was sent.
"""

from __future__ import annotations

from domain.events import DomainEvent


def saga_stream(saga_id: str) -> str:
    """Stream id of one saga run (saga id = workflow id)."""
    return f"saga-{saga_id}"


def notification_stream(order_id: str) -> str:
    """Stream id of an order's notifications."""
    return f"notification-{order_id}"


class SagaStarted(DomainEvent):
    """A saga began (the order saga's saga id is the order id); ``keys`` are its
    declared business keys (customer, order...) as text."""

    saga_id: str
    saga_type: str
    order_id: str | None = None
    keys: dict[str, str] = {}


class SagaStepCompleted(DomainEvent):
    """One step's action completed; its compensation is now owed on failure."""

    saga_id: str
    step: str


class SagaCompleted(DomainEvent):
    """Every step succeeded (for the order saga: up to the confirmation); ``status``
    is what the saga is now (``completed``, or e.g. ``awaiting_shipment``)."""

    saga_id: str
    status: str = ""


class SagaCompensated(DomainEvent):
    """A failure undid the completed steps in reverse order."""

    saga_id: str
    reason: str
    compensated_steps: list[str]


class CompensationParked(DomainEvent):
    """A compensation kept failing; the saga waits for an operator."""

    saga_id: str
    step: str
    error: str


class CompensationRetried(DomainEvent):
    """An operator asked to retry a parked compensation (or parked forward step)."""

    saga_id: str
    step: str
    operator: str = ""
    note: str = ""


class CompensationResolved(DomainEvent):
    """A parked compensation was done (after a retry) or resolved by hand."""

    saga_id: str
    step: str
    resolution: str
    operator: str = ""
    note: str = ""


class CompensationSkipped(DomainEvent):
    """An operator gave up a parked compensation: it is *not* done (a known loss)."""

    saga_id: str
    step: str
    operator: str
    note: str


class CompensationEscalated(DomainEvent):
    """A compensation stayed parked longer than the escalation bound (recorded once)."""

    saga_id: str
    step: str
    parked_for_s: float


class StepParked(DomainEvent):
    """A retriable step after the pivot failed for good; it waits for an operator
    (retry or skip), never compensating across the pivot."""

    saga_id: str
    step: str
    error: str


class SagaStatusChanged(DomainEvent):
    """The saga moved to another status of its own flow (shipped, delivered...)."""

    saga_id: str
    status: str
    step: str = ""


class ConfirmationSent(DomainEvent):
    """The order confirmation went out through the notification port."""

    order_id: str
    channel: str
    recipient: str
