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
        stream = saga_stream(saga_id)
        # SagaStarted came buffered with later records (engine 3). Why drop it when
        # the stream exists: the API appended it alone already (or an earlier try of
        # this batch did); a batch with it would be a partial duplicate. If the API's
        # append lands between this read and the append, the append raises
        # DuplicateEventConflict and the retry (unlimited) reads the stream again.
        buffered_start = records[0].kind == "SagaStarted" and len(records) > 1
        if buffered_start and await self.store.stream_version(stream) > 0:
            records = records[1:]
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
        # batch is retried whole, less only a SagaStarted already stored).
        await self.store.append(stream, new_events, ANY_VERSION, stream_type="Saga")
