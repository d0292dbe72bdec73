"""The event envelope, the feed cursor and the store's errors: one vocabulary everywhere.

``stream_id``, ``version`` (1-based per stream) and ``global_position`` mean the same
thing in the store, on the Kafka wire and in the read models.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.events import DomainEvent

#: ``expected_version`` meaning "the stream must not exist yet".
NO_STREAM = 0
#: ``expected_version`` meaning "append whatever the stream's version is".
ANY_VERSION = -1

MAX_STREAM_ID_LENGTH = 200
_STREAM_ID = re.compile(r"^[A-Za-z0-9._:@/-]+$")
METADATA_KEYS = ("correlation_id", "causation_id", "user_id", "workflow_id", "activity_id")


class EventStoreError(Exception):
    """Base of every error the store raises."""


class InvalidStreamId(EventStoreError):
    """A stream id that is empty, too long or holds characters the store refuses."""


class ConcurrencyError(EventStoreError):
    """The stream's version was not the expected one; nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        want = "no stream" if expected == NO_STREAM else f"version {expected}"
        have = "no stream" if actual == 0 else f"version {actual}"
        super().__init__(f"stream {stream_id!r}: expected {want}, found {have}")


class DuplicateEventConflict(EventStoreError):
    """An append's event ids are partly stored, or stored for another fact: a caller bug."""


class UnreadableEvent(EventStoreError):
    """A stored event that cannot be turned into a domain event (type, version, payload)."""

    def __init__(self, stream_id: str, version: int, global_position: int, reason: str) -> None:
        self.stream_id, self.version, self.global_position = stream_id, version, global_position
        self.reason = reason
        super().__init__(
            f"stream {stream_id!r} version {version} (global position {global_position}): {reason}"
        )


def check_stream_id(stream_id: str) -> str:
    """Validate a stream id before it reaches the database."""
    if not isinstance(stream_id, str) or not stream_id:
        raise InvalidStreamId("stream id must be a non-empty string")
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise InvalidStreamId(
            f"stream id {stream_id[:40]!r}... is {len(stream_id)} characters; "
            f"the limit is {MAX_STREAM_ID_LENGTH}"
        )
    if not _STREAM_ID.match(stream_id):
        raise InvalidStreamId(
            f"stream id {stream_id!r} may hold only letters, digits and . _ : @ / -"
        )
    return stream_id


def check_same_fact(new: NewEvent, stream_id: str, stored: RecordedEvent) -> None:
    """Refuse an idempotent hit whose stored event is another fact than ``new``.

    An event id names one fact: a retried append of the same events is a no-op, but an
    id reused for another stream, type or payload would otherwise "succeed" and hide
    the caller's new decision. Metadata is not compared (a retry's activity id and
    attempt may differ). Why the payload only at the same schema version: an older
    release may have stored the fact in its own shape before an upgrade retried it.
    """
    stored_as = f"stream {stored.stream_id!r} version {stored.version} ({stored.event_type})"
    if stored.stream_id != stream_id:
        differs = f"not in {stream_id!r}"
    elif stored.event_type != new.event_type:
        differs = f"not as {new.event_type}"
    elif stored.schema_version == new.schema_version and stored.data != _json_form(new.data()):
        differs = "with other data"
    else:
        return
    raise DuplicateEventConflict(
        f"event id {new.event_id} is already stored as {stored_as}, {differs}: "
        "an event id names one fact"
    )


def _json_form(data: dict[str, Any]) -> dict[str, Any]:
    # The stored payload went through JSON (tuples became lists): compare like for like.
    loaded: dict[str, Any] = json.loads(json.dumps(data))
    return loaded


def deterministic_event_id(*parts: object) -> uuid.UUID:
    """An event id derived from its origin (workflow id, step, index): retries reuse it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "sagaflow:" + "/".join(str(p) for p in parts))


@dataclass(frozen=True)
class NewEvent:
    """An event about to be appended: the domain event, its id and its metadata."""

    event: DomainEvent
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def event_type(self) -> str:
        """The registered type name."""
        return self.event.event_type

    @property
    def schema_version(self) -> int:
        """The event class's current schema version."""
        return self.event.schema_version

    def data(self) -> dict[str, Any]:
        """The JSON-safe payload."""
        return self.event.model_dump(mode="json")


@dataclass(frozen=True, order=True)
class FeedCursor:
    """A position in the global feed: (epoch, transaction id, global position).

    Why the triple: positions are taken from a sequence when a row is written, but
    rows become visible when their transaction commits, so a reader that remembered
    only the position would skip an event that committed late. The feed is ordered
    by the writing transaction's id (below the oldest running transaction) and then
    position; the epoch moves on when transaction ids restart (dump and restore).
    """

    epoch: int = 0
    tx_id: int = 0
    position: int = 0

    def encode(self) -> str:
        """Compact text form (``epoch.tx.position``) for tokens and checkpoints."""
        return f"{self.epoch}.{self.tx_id}.{self.position}"

    @classmethod
    def decode(cls, token: str) -> FeedCursor:
        """Parse ``encode``'s output; raises ValueError on anything else."""
        parts = token.split(".")
        # Why no generator here: the projector decodes one cursor per message it reads
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise ValueError(f"{token!r} is not a feed cursor (epoch.tx.position)")
        if not parts[2].isdigit():
            raise ValueError(f"{token!r} is not a feed cursor (epoch.tx.position)")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


START = FeedCursor()


@dataclass(frozen=True)
class RecordedEvent:
    """A stored event: the envelope of DESIGN.md plus its feed cursor."""

    event_id: uuid.UUID
    event_type: str
    schema_version: int
    stream_id: str
    stream_type: str
    version: int
    global_position: int
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    cursor: FeedCursor = START

    def envelope(self) -> dict[str, Any]:
        """JSON-safe envelope (the Kafka body and the API's raw stream)."""
        return {
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "stream_id": self.stream_id,
            "stream_type": self.stream_type,
            "version": self.version,
            "global_position": self.global_position,
            "recorded_at": self.recorded_at.isoformat(),
            "data": self.data,
            "metadata": self.metadata,
            "cursor": self.cursor.encode(),
        }

    @classmethod
    def from_envelope(cls, raw: Mapping[str, Any]) -> RecordedEvent:
        """Inverse of ``envelope``; raises KeyError/ValueError/TypeError when malformed."""
        return cls(
            event_id=uuid.UUID(str(raw["event_id"])),
            event_type=str(raw["event_type"]),
            schema_version=int(raw["schema_version"]),
            stream_id=str(raw["stream_id"]),
            stream_type=str(raw["stream_type"]),
            version=int(raw["version"]),
            global_position=int(raw["global_position"]),
            recorded_at=datetime.fromisoformat(str(raw["recorded_at"])),
            data=dict(raw["data"]),
            metadata=dict(raw.get("metadata") or {}),
            cursor=FeedCursor.decode(str(raw.get("cursor", "0.0.0"))),
        )


@dataclass(frozen=True)
class AppendResult:
    """What an append did: the versions it wrote, or that it was a retried duplicate."""

    stream_id: str
    first_version: int
    last_version: int
    global_positions: tuple[int, ...]
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A stored event with its envelope already rendered as JSON bytes (what the relay sends).

    The fields beside ``body`` are the envelope's scalars (routing keys and headers are
    built from them without parsing the body); ``recorded_at`` is the ISO 8601 text
    the body holds. ``PostgresEventStore.read_feed_encoded`` renders the body in SQL;
    ``of`` renders it from a ``RecordedEvent`` (same fields, same meaning).
    """

    cursor: FeedCursor
    event_id: str
    event_type: str
    schema_version: int
    stream_id: str
    stream_type: str
    version: int
    recorded_at: str
    metadata: dict[str, Any]
    body: bytes

    @property
    def global_position(self) -> int:
        """The event's global position (the cursor's last part)."""
        return self.cursor.position

    @classmethod
    def of(cls, recorded: RecordedEvent) -> EncodedEvent:
        """The encoded form of ``recorded`` (``RecordedEvent.envelope`` as compact JSON)."""
        import json

        envelope = recorded.envelope()
        return cls(
            cursor=recorded.cursor,
            event_id=envelope["event_id"],
            event_type=recorded.event_type,
            schema_version=recorded.schema_version,
            stream_id=recorded.stream_id,
            stream_type=recorded.stream_type,
            version=recorded.version,
            recorded_at=envelope["recorded_at"],
            metadata=recorded.metadata,
            body=json.dumps(envelope, separators=(",", ":")).encode(),
        )
