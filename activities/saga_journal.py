"""The saga journal: appends the saga's own events to ``saga-<saga_id>``."""

from __future__ import annotations

from temporalio import activity

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
    saga_stream,
)
from eventstore import ANY_VERSION, EventStore, NewEvent, deterministic_event_id
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


class SagaJournalActivities:
    """Records saga events; the sequence number makes each append idempotent."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    @activity.defn(name="record_saga_events")
    async def record_saga_events(self, records: list[SagaRecord]) -> None:
        """Append saga events in one atomic append (a retried append writes nothing)."""
        if not records:
            return
        info = activity.info()
        saga_id = records[0].saga_id
        new_events = [
            NewEvent(
                saga_event(record),
                event_id=deterministic_event_id(info.workflow_id, "journal", record.seq),
                metadata={
                    "correlation_id": saga_id,
                    "causation_id": f"{info.workflow_id}/journal/{record.seq}",
                    "user_id": record.operator,
                    "workflow_id": info.workflow_id,
                    "activity_id": info.activity_id,
                },
            )
            for record in records
        ]
        # Why ANY_VERSION: the workflow issues journal appends one at a time, in
        # order, so the stream's order is the saga's; the ids dedupe retries (a
        # batch is always retried whole, never split).
        await self.store.append(saga_stream(saga_id), new_events, ANY_VERSION, stream_type="Saga")
