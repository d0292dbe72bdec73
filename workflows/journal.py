"""The saga journal's mapping: which domain event a journal record stands for.

Pure (no I/O), so both the journal activity and the API (which appends the first
record itself to hand out a consistency token at once) share one definition.
"""

from __future__ import annotations

from domain.events import DomainEvent
from domain.saga_events import (
    CompensationEscalated,
    CompensationParked,
    CompensationResolved,
    CompensationRetried,
    CompensationSkipped,
    SagaCompensated,
    SagaCompleted,
    SagaStarted,
    SagaStatusChanged,
    SagaStepCompleted,
    StepParked,
)
from workflows.models import SagaRecord


def saga_event(record: SagaRecord) -> DomainEvent:
    """The domain event a journal record stands for."""
    sid = record.saga_id
    match record.kind:
        case "SagaStarted":
            return SagaStarted(
                saga_id=sid, saga_type=record.saga_type, order_id=record.order_id, keys=record.keys
            )
        case "SagaStepCompleted":
            return SagaStepCompleted(saga_id=sid, step=record.step)
        case "SagaCompleted":
            return SagaCompleted(saga_id=sid, status=record.status)
        case "SagaStatusChanged":
            return SagaStatusChanged(saga_id=sid, status=record.status, step=record.step)
        case "SagaCompensated":
            return SagaCompensated(
                saga_id=sid, reason=record.reason, compensated_steps=list(record.steps)
            )
        case "CompensationParked":
            return CompensationParked(saga_id=sid, step=record.step, error=record.reason)
        case "StepParked":
            return StepParked(saga_id=sid, step=record.step, error=record.reason)
        case "CompensationRetried":
            return CompensationRetried(
                saga_id=sid, step=record.step, operator=record.operator, note=record.note
            )
        case "CompensationResolved":
            return CompensationResolved(
                saga_id=sid,
                step=record.step,
                resolution=record.reason,
                operator=record.operator,
                note=record.note,
            )
        case "CompensationSkipped":
            return CompensationSkipped(
                saga_id=sid, step=record.step, operator=record.operator, note=record.note
            )
        case "CompensationEscalated":
            return CompensationEscalated(
                saga_id=sid, step=record.step, parked_for_s=float(record.reason or 0)
            )
    raise ValueError(f"unknown saga record kind {record.kind!r}")
