"""The saga journal: appends the saga's own events to ``saga-<saga_id>``."""

from __future__ import annotations

from temporalio import activity

from domain.saga_events import saga_stream
from eventstore import ANY_VERSION, EventStore, NewEvent, deterministic_event_id
from workflows.journal import saga_event
from workflows.models import SagaRecord


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
