"""Inputs, results and names of the returns saga: plain dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from workflows.models import RetryKnobs, StepContext

RETURN_SAGA = "ReturnSaga"
"""The workflow type name (stable: renaming it breaks running sagas and replay)."""

RECEIVE = "receive"
"""Update: the returned goods arrived (refused unless the saga waits for them)."""


@dataclass(frozen=True)
class ReturnSagaOptions:
    """Knobs read from settings by the use case and frozen into the saga input.

    Why in the input: workflow code may not read settings (a replay would see other
    values); the input is in history, so replays see the same knobs.
    """

    receive_deadline_s: float = 14 * 86400
    start_to_close_s: float = 10.0
    local_activities: bool = True
    step_retry: RetryKnobs = field(default_factory=RetryKnobs)
    compensation_retry: RetryKnobs = field(default_factory=lambda: RetryKnobs(max_attempts=5))
    refund_retry: RetryKnobs = field(default_factory=lambda: RetryKnobs(max_attempts=5))
    notification_retry: RetryKnobs = field(default_factory=lambda: RetryKnobs(max_attempts=10))


@dataclass(frozen=True)
class ReturnLineInput:
    """One returned line: SKU and units (prices come from the order)."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class ReturnSagaInput:
    """Input of the returns saga (workflow id = return id)."""

    return_id: str
    order_id: str
    customer_id: str
    reason: str
    lines: list[ReturnLineInput]
    options: ReturnSagaOptions = field(default_factory=ReturnSagaOptions)
    user_id: str = ""


@dataclass(frozen=True)
class ReturnSagaResult:
    """How the return ended: completed, or compensated (expired, cancelled, failed)."""

    return_id: str
    status: str
    reason: str = ""
    refunded_cents: int = 0
    compensated_steps: list[str] = field(default_factory=list)


# --- activity inputs and results ---------------------------------------------------


@dataclass(frozen=True)
class OpenReturn:
    """Register the lines on the order (the rule) and open the return's stream."""

    ctx: StepContext
    return_id: str
    order_id: str
    customer_id: str
    reason: str
    lines: list[ReturnLineInput]


@dataclass(frozen=True)
class PricedReturnLine:
    """A returned line priced at the order's unit price."""

    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class ReturnOpenedResult:
    """The opened return: its priced lines and total."""

    lines: list[PricedReturnLine]
    total_cents: int


@dataclass(frozen=True)
class CloseReturn:
    """Cancel (compensation of opening) or expire a return; ``expired`` says which."""

    ctx: StepContext
    return_id: str
    order_id: str
    reason: str
    expired: bool = False


@dataclass(frozen=True)
class ReceiveReturn:
    """Record that the goods arrived."""

    ctx: StepContext
    return_id: str


@dataclass(frozen=True)
class RestockReturn:
    """Put one line's returned units back in stock (or, as compensation, take them out)."""

    ctx: StepContext
    return_id: str
    order_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class RefundReturn:
    """Refund the return's total through the payment provider (the pivot)."""

    ctx: StepContext
    return_id: str
    order_id: str
    amount_cents: int


@dataclass(frozen=True)
class NotifyReturn:
    """Tell the customer the refund went through, then close the return."""

    ctx: StepContext
    return_id: str
    customer_id: str
    amount_cents: int


@dataclass(frozen=True)
class ReceiveRequest:
    """Payload of the ``receive`` update."""

    note: str = ""
