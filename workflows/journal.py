"""The saga journal's mapping: which domain event a journal record stands for.

Pure (no I/O), so both the journal activity and the API (which appends the first
record itself to hand out a consistency token at once) share one definition.
"""

from __future__ import annotations

from domain.events import DomainEvent
from domain.saga_events import (
    CompensationParked,
    CompensationResolved,
    CompensationRetried,
    SagaCompensated,
    SagaCompleted,
    SagaStarted,
    SagaStepCompleted,
)
from workflows.models import SagaRecord


def saga_event(record: SagaRecord) -> DomainEvent:
    """The domain event a journal record stands for."""
    sid = record.saga_id
    match record.kind:
        case "SagaStarted":
            return SagaStarted(saga_id=sid, saga_type=record.saga_type, order_id=record.order_id)
        case "SagaStepCompleted":
            return SagaStepCompleted(saga_id=sid, step=record.step)
        case "SagaCompleted":
            return SagaCompleted(saga_id=sid)
        case "SagaCompensated":
            return SagaCompensated(
                saga_id=sid, reason=record.reason, compensated_steps=list(record.steps)
            )
        case "CompensationParked":
            return CompensationParked(saga_id=sid, step=record.step, error=record.reason)
        case "CompensationRetried":
            return CompensationRetried(saga_id=sid, step=record.step)
        case "CompensationResolved":
            return CompensationResolved(saga_id=sid, step=record.step, resolution=record.reason)
    raise ValueError(f"unknown saga record kind {record.kind!r}")
