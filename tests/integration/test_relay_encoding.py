"""The envelope the store renders for the relay says what ``RecordedEvent.envelope`` says."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from domain import events as ev
from eventstore.envelope import NO_STREAM, EncodedEvent, NewEvent
from eventstore.postgres import PostgresEventStore
from streaming.kafka import encode_record

pytestmark = pytest.mark.integration


async def test_the_encoded_feed_holds_the_same_events_headers_and_envelopes(
    pg_store: PostgresEventStore,
) -> None:
    for i in range(3):
        order = f"enc-{uuid.uuid4().hex[:8]}"
        await pg_store.append(
            ev.order_stream(order),
            [
                NewEvent(
                    ev.OrderCreated(order_id=order, customer_id=f"c-{i} \"quoted\" é"),
                    metadata={"correlation_id": "corr", "user_id": None, "workflow_id": "wf"},
                ),
                NewEvent(ev.OrderItemAdded(sku="sku-1", name="A \\ b",
                                           quantity=2, unit_price_cents=150)),
            ],
            NO_STREAM,
            stream_type="Order",
        )  # fmt: skip
    recorded = await pg_store.read_feed(limit=1000)
    encoded = await pg_store.read_feed_encoded(limit=1000)
    assert [e.cursor for e in encoded] == [r.cursor for r in recorded]
    for rec, enc in zip(recorded, encoded, strict=True):
        expected, got = rec.envelope(), json.loads(enc.body)
        assert list(got) == list(expected), "same keys, same order"
        at_expected = datetime.fromisoformat(expected.pop("recorded_at"))
        assert datetime.fromisoformat(got.pop("recorded_at")) == at_expected
        assert got == expected
        key, _, headers = encode_record(enc)
        key_py, _, headers_py = encode_record(EncodedEvent.of(rec))
        assert key == key_py
        strip = {"recorded_at"}
        assert [h for h in headers if h[0] not in strip] == [
            h for h in headers_py if h[0] not in strip
        ]
        assert dict(headers)["recorded_at"].decode() == json.loads(enc.body)["recorded_at"]
