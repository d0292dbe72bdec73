"""Shared inputs, results and names of the order saga: one small module, no I/O.

Plain dataclasses, so Temporal's default JSON converter carries them; the workflow,
the activities, the worker and the starter all import from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TASK_QUEUE = "sagaflow-orders"
"""Default task queue of the order saga (``Settings.task_queue`` overrides it)."""

ORDER_SAGA = "OrderSaga"
"""The workflow type name (stable: renaming it breaks running sagas and replay)."""

# Update names: each has a validator, so a refused request writes nothing to history.
SHIP = "ship"
DELIVER = "deliver"
CANCEL = "cancel"
RETRY_COMPENSATION = "retry_compensation"
RESOLVE_COMPENSATION = "resolve_compensation"
SKIP_COMPENSATION = "skip_compensation"
STATUS_QUERY = "status"
PLAN_QUERY = "plan"
OUTCOME = "outcome"
"""Update that waits for the saga's outcome (confirmed or compensated); never refused."""

# Non-retryable ApplicationError types raised by activities for business failures.
OUT_OF_STOCK = "OutOfStock"
UNKNOWN_PRODUCT = "UnknownProduct"
PAYMENT_DECLINED = "PaymentDeclined"
COMMAND_REFUSED = "CommandRefused"


@dataclass(frozen=True)
class RetryKnobs:
    """A retry policy as data (the workflow builds ``RetryPolicy`` from it)."""

    initial_interval_s: float = 0.5
    backoff: float = 2.0
    max_interval_s: float = 30.0
    max_attempts: int = 8


@dataclass(frozen=True)
class SagaOptions:
    """Tuning read from settings by the starter and frozen into the workflow input.

    Why in the input: workflow code may not read the environment (replay would see
    other values); the input is recorded in history, so replays see the same knobs.
    """

    ship_deadline_s: float = 7 * 86400
    delivery_timeout_s: float = 60 * 86400
    start_to_close_s: float = 10.0
    local_activities: bool = True
    step_retry: RetryKnobs = field(default_factory=RetryKnobs)
    compensation_retry: RetryKnobs = field(default_factory=lambda: RetryKnobs(max_attempts=5))
    notification_retry: RetryKnobs = field(default_factory=lambda: RetryKnobs(max_attempts=10))
    #: the confirmation as a local activity (absent in older inputs: a regular one)
    local_notifications: bool = False


@dataclass(frozen=True)
class LineInput:
    """One requested line: SKU and quantity (never a price: prices come from the catalogue)."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class OrderSagaInput:
    """Input of the order saga (workflow id = order id)."""

    order_id: str
    customer_id: str
    lines: list[LineInput]
    options: SagaOptions = field(default_factory=SagaOptions)
    user_id: str = ""


# --- activity inputs and results ---------------------------------------------------


@dataclass(frozen=True)
class StepContext:
    """Where an activity's events come from: the idempotency key and event metadata."""

    workflow_id: str
    step: str
    customer_id: str = ""
    user_id: str = ""


@dataclass(frozen=True)
class ReserveStock:
    """Reserve ``quantity`` of ``sku`` for the order (one Inventory stream)."""

    ctx: StepContext
    order_id: str
    sku: str
    quantity: int
    reservation_id: str


@dataclass(frozen=True)
class Reserved:
    """A reservation and the catalogue entry it was priced from."""

    reservation_id: str
    sku: str
    name: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class ReleaseStock:
    """Give a reservation back (compensation of ``ReserveStock``); no-op if not open."""

    ctx: StepContext
    sku: str
    reservation_id: str


@dataclass(frozen=True)
class SellStock:
    """Turn a reservation into a sale when the order ships."""

    ctx: StepContext
    sku: str
    reservation_id: str


@dataclass(frozen=True)
class ChargePayment:
    """Charge the order's total; ``idempotency_key`` goes to the provider."""

    ctx: StepContext
    order_id: str
    amount_cents: int
    idempotency_key: str


@dataclass(frozen=True)
class Charged:
    """A successful charge."""

    payment_id: str
    amount_cents: int


@dataclass(frozen=True)
class RefundPayment:
    """Refund what is still refundable of the order's charge (compensation)."""

    ctx: StepContext
    order_id: str
    reason: str


@dataclass(frozen=True)
class PricedLine:
    """An order line priced from the catalogue at reservation time."""

    sku: str
    name: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class CreateOrder:
    """Create, submit and mark paid the order in one append to its stream."""

    ctx: StepContext
    order_id: str
    customer_id: str
    lines: list[PricedLine]
    payment_id: str
    amount_cents: int


@dataclass(frozen=True)
class CancelOrder:
    """Cancel the order with a reason (compensation); no-op if never created."""

    ctx: StepContext
    order_id: str
    reason: str


@dataclass(frozen=True)
class ShipOrderInput:
    """Record the shipment on the order."""

    ctx: StepContext
    order_id: str
    tracking_number: str
    carrier: str


@dataclass(frozen=True)
class DeliverOrderInput:
    """Record the delivery on the order."""

    ctx: StepContext
    order_id: str


@dataclass(frozen=True)
class SendConfirmation:
    """Send the order confirmation through the notification port."""

    ctx: StepContext
    order_id: str
    customer_id: str
    total_cents: int


@dataclass(frozen=True)
class SagaRecord:
    """One saga event to append to ``saga-<saga_id>``.

    ``kind`` is the event class name (SagaStarted, SagaStepCompleted, SagaCompleted,
    SagaCompensated, CompensationParked, CompensationRetried, CompensationResolved,
    CompensationSkipped, CompensationEscalated, StepParked, SagaStatusChanged);
    ``operator`` and ``note`` say who decided an operator action and why;
    ``seq`` makes the event id unique within the saga (a retried append is a no-op).
    """

    saga_id: str
    saga_type: str
    kind: str
    seq: int
    step: str = ""
    reason: str = ""
    steps: list[str] = field(default_factory=list)
    order_id: str | None = None
    operator: str = ""
    note: str = ""
    status: str = ""
    keys: dict[str, str] = field(default_factory=dict)


# --- updates and query -------------------------------------------------------------


@dataclass(frozen=True)
class ShipRequest:
    """Payload of the ``ship`` update."""

    tracking_number: str
    carrier: str


@dataclass(frozen=True)
class CancelRequest:
    """Payload of the ``cancel`` update."""

    reason: str


@dataclass(frozen=True)
class CompensationDecision:
    """Payload of ``retry_compensation`` / ``resolve_compensation`` / ``skip_compensation``
    (step as in the log; ``operator`` is the caller's identity, recorded in the event)."""

    step: str
    note: str = ""
    operator: str = ""


@dataclass
class CompensationEntry:
    """One compensation in the saga's log, as shown by the query.

    ``status``: pending, running, done, parked, retrying, resolved, skipped.
    ``phase`` is ``compensation`` (undoing a step) or ``forward`` (a retriable step
    after the pivot that an operator must unblock).
    """

    step: str
    activity: str
    status: str = "pending"
    error: str = ""
    attempts: int = 0
    note: str = ""
    operator: str = ""
    phase: str = "compensation"
    parked_at: str = ""
    escalated: bool = False


@dataclass
class StepState:
    """One step instance and its outcome so far.

    ``outcome``: not_started, in_flight, committed, unknown (failed after a possible
    commit: timed out or crashed), rejected (a business refusal), compensating,
    compensated, parked, resolved, skipped.
    """

    step: str
    kind: str
    outcome: str = "not_started"
    compensation: str = ""
    error: str = ""


@dataclass
class SagaPlan:
    """What the ``plan`` query returns: the compensation a cancel or failure would run now.

    ``compensation`` lists the groups in the order they would run; the steps of one
    group run in parallel. Empty once the pivot committed (the saga only goes forward).
    """

    saga_id: str
    saga_type: str
    status: str
    pivot_committed: bool
    compensation: list[list[str]] = field(default_factory=list)
    steps: list[StepState] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class EngineOptions:
    """Engine knobs frozen at start (in the workflow memo, so replays see the same).

    ``search_attributes``: upsert SagaStatus/SagaStep/business keys as the saga moves
    (needs them registered on the server); ``escalate_after_s``: a compensation parked
    longer than this records CompensationEscalated, once (0 = never);
    ``business_keys``: the business keys are search attributes too (off when payloads
    are encrypted: search attributes are never encrypted, and the keys name people).
    """

    search_attributes: bool = False
    escalate_after_s: float = 3600.0
    # Why True by default: sagas started before this field existed have no value in
    # their memo and upserted their business keys; their replays must do the same.
    business_keys: bool = True


@dataclass
class SagaStatus:
    """What the ``status`` query returns (the order fields stay empty for other types)."""

    saga_id: str
    status: str
    current_step: str
    completed_steps: list[str] = field(default_factory=list)
    compensation_log: list[CompensationEntry] = field(default_factory=list)
    failure: str = ""
    saga_type: str = ""
    pivot_committed: bool = False
    steps: list[StepState] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    total_cents: int = 0
    tracking_number: str = ""
    carrier: str = ""
    confirmation_sent: bool = False

    @property
    def parked(self) -> list[CompensationEntry]:
        """Compensations waiting for an operator."""
        return [c for c in self.compensation_log if c.status == "parked"]


@dataclass(frozen=True)
class OrderSagaResult:
    """How the saga ended: delivered, shipped (delivery unconfirmed) or compensated."""

    order_id: str
    status: str
    reason: str = ""
    compensated_steps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SagaResult:
    """The result of a linear saga: completed, or compensated with the reason."""

    saga_id: str
    status: str
    reason: str = ""
    compensated_steps: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
