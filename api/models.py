"""HTTP request and response models, named by role (``OrderCreate``, ``OrderAccepted``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from projections.queries import OrderSummary

NO_NUL = r"^[^\x00]*$"
"""Free text may not hold NUL: PostgreSQL's text and jsonb cannot store it (422, not 500)."""
PRINTABLE_NAME = r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\x85\s][^\x00-\x1f\x7f]*$"
"""A name to filter by: printable, and something besides whitespace."""
NONBLANK = r"^[^\x00]*[^\x00\x1c-\x1f\x85\s][^\x00]*$"
"""Required free text: no NUL, and something besides whitespace. Why the explicit
FS/GS/RS/US and NEL: inputs are stripped with Python's ``str.strip``, which removes
them, while a JSON-Schema (ECMA) whitespace class does not match them."""

# The shape ConsistencyToken.decode accepts, exactly: a bigint-sized position and
# version around a stream id in the event store's alphabet (eventstore.envelope).
TOKEN_PATTERN = r"^[0-9]{1,19}~[A-Za-z0-9._:@/-]{1,200}~[0-9]{1,19}$"
"""A consistency token: ``<global_position>~<stream_id>~<version>``."""
ID_PATTERN = r"^[A-Za-z0-9._-]+$"

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OrderLineIn(_Input):
    """One line of a new order: the SKU and how many (prices come from the catalogue)."""

    sku: Sku
    # Documented, not enforced here: the command's own validation refuses it with a
    # message naming the line ("line 0 (sku X): quantity must be positive, got 0").
    quantity: int = Field(description="units; must be positive", json_schema_extra={"minimum": 1})


class OrderCreate(_Input):
    """A new order."""

    customer_id: Ident
    lines: list[OrderLineIn] = Field(min_length=1, max_length=1000, description="at least one line")


class OrderAccepted(BaseModel):
    """The order was accepted and its saga started."""

    order_id: str = Field(pattern=ID_PATTERN)
    status: str = "accepted"
    consistency_token: str = Field(
        pattern=TOKEN_PATTERN, description="pass as ?consistency_token= to read your own write"
    )
    location: str


class OrderOutcome(BaseModel):
    """Why an order did not go through, and what was undone (absent while it goes well)."""

    outcome: str | None = Field(
        default=None,
        description="rejected (refused before the order was created: stock, payment), "
        "cancelled (by request), compensated (a failure after it was created), "
        "compensating or compensation_parked (still undoing)",
    )
    failure: str | None = Field(
        default=None, description="why, e.g. 'insufficient stock: requested 50, available 3'"
    )
    undone: list[str] = Field(default=[], description="the steps compensated, in order")
    parked_steps: list[str] = Field(default=[], description="compensations waiting for people")


class PendingOrder(OrderOutcome):
    """An accepted order whose saga has not created the order: ``pending`` while it
    runs, ``rejected`` once it failed (the outcome fields say why)."""

    order_id: str
    status: str = Field(default="pending", pattern="^(pending|rejected)$")
    saga_status: str


class OrderSummaryOut(OrderSummary, OrderOutcome):
    """The order summary; a cancelled order also says why and what was undone."""


class ShipIn(_Input):
    """Shipping details."""

    tracking_number: str = Field(min_length=1, max_length=100, pattern=NONBLANK)
    carrier: str = Field(min_length=1, max_length=100, pattern=NONBLANK)


class CancelIn(_Input):
    """Why the order is cancelled."""

    reason: str = Field(
        default="cancelled by request", min_length=1, max_length=500, pattern=NONBLANK
    )


class CompensationDecisionIn(_Input):
    """Which parked compensation, and a note for the log."""

    step: str = Field(min_length=1, max_length=100, pattern=NONBLANK)
    note: str = Field(default="", max_length=500, pattern=NO_NUL)


class SagaCommandResult(BaseModel):
    """What a saga command did."""

    order_id: str
    result: str


class ProductCreate(_Input):
    """A catalogue entry."""

    sku: Sku
    name: str = Field(min_length=1, max_length=200, pattern=NONBLANK)
    unit_price_cents: int = Field(gt=0, le=100_000_000)


class RestockIn(_Input):
    """Units to add to a SKU's stock."""

    quantity: int = Field(gt=0, le=1_000_000)


class ProductOut(BaseModel):
    """A catalogue entry with its stock from the event store."""

    sku: str
    name: str
    unit_price_cents: int
    available: int
    reserved: int
    sold: int


class EventOut(BaseModel):
    """One stored event, with its envelope."""

    event_id: str
    event_type: str
    schema_version: int
    stream_id: str
    stream_type: str
    version: int
    global_position: int
    recorded_at: str
    data: dict[str, Any]
    metadata: dict[str, Any]


class ReadinessOut(BaseModel):
    """Each dependency: "ok" or what is wrong."""

    status: str
    checks: dict[str, str]


class DeadLetterOut(BaseModel):
    """A dead-lettered message, in the event store's words (stream, version, position)."""

    id: int = Field(description="the dead letter's id (replay / skip take it)")
    consumer: str = Field(description="the projector group that dead-lettered it")
    position: str = Field(
        description="where the transport delivered it from, as the position token "
        "`<source>/<lane>@<ordinal>`: a Kafka topic, partition and offset; a RabbitMQ "
        "shard queue, its shard and the event's global position; or `$feed/0@<global "
        "position>` (embedded). Opaque: compare it, do not parse it."
    )
    stream_id: str | None = Field(description="the event's stream (null: not an envelope)")
    event_id: str | None = Field(description="the event's id (null: not an envelope)")
    version: int | None = Field(description="the event's version in its stream")
    handler: str = Field(description="what failed: a read model's name, `decode`, `gap`...")
    error: str = Field(description="the last error")
    attempts: int = Field(description="attempts made before it was dead-lettered")
    status: str = Field(description="`open`, `replayed` or `skipped`")
    created_at: str
    resolved_at: str | None
    parked: int = Field(description="later messages of its stream held behind it")


class ResolutionOut(BaseModel):
    """What a dead-letter replay or skip did."""

    dead_letter_id: int
    status: str
    released: int
    still_parked: int
    new_dead_letter: str | None = None


class ReturnLineIn(_Input):
    """One returned line: the SKU and how many units."""

    sku: Sku
    # Documented, not enforced here: the command's own validation refuses it with a
    # message naming the line ("line 0 (sku X): quantity must be positive, got 0").
    quantity: int = Field(description="units; must be positive", json_schema_extra={"minimum": 1})


class ReturnCreate(_Input):
    """A return of a delivered order."""

    lines: list[ReturnLineIn] = Field(
        max_length=1000, description="at least one line", json_schema_extra={"minItems": 1}
    )
    reason: str = Field(min_length=1, max_length=500, pattern=NONBLANK)


class ReceiveIn(_Input):
    """The goods of a return arrived."""

    note: str = Field(default="", max_length=500, pattern=NO_NUL)


class ReturnAccepted(BaseModel):
    """The return was accepted and its saga started."""

    return_id: str
    order_id: str
    status: str = "accepted"
    location: str


class ReturnCommandResult(BaseModel):
    """What a command on a return's saga did."""

    return_id: str
    result: str


# --- sagas of every type -------------------------------------------------------------


class SagaAccepted(BaseModel):
    """A started saga: where to read it and the token that waits for the write."""

    saga_id: str = Field(pattern=ID_PATTERN)
    saga_type: str
    consistency_token: str = Field(pattern=TOKEN_PATTERN)
    location: str


class SagaCancelIn(_Input):
    """Why the saga is cancelled."""

    reason: str = Field(
        default="cancelled by request", min_length=1, max_length=500, pattern=NONBLANK
    )


class SagaActionOut(BaseModel):
    """What a saga command did (``result``: the saga's or the step's status after it)."""

    saga_id: str
    result: str


class BulkRetryIn(_Input):
    """Which parked steps to retry (all of them by default), and a note for the log."""

    saga_type: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=PRINTABLE_NAME
    )
    step: str | None = Field(default=None, min_length=1, max_length=100, pattern=PRINTABLE_NAME)
    note: str = Field(default="", max_length=500, pattern=NO_NUL)


class BulkRetryItem(BaseModel):
    """One retried parked step and what came of it."""

    saga_id: str
    step: str
    result: str
    detail: str | None = None


class BulkRetryOut(BaseModel):
    """The parked steps retried and their results."""

    retried: int
    results: list[BulkRetryItem]
