"""Pure read-model logic: how each event changes a view row or an analytics counter.

No I/O here: the SQL adapters in ``projections.handlers`` load rows, call these
functions and write the results back, so the rules are unit-tested on their own.
Rows are plain dicts shaped like the table columns; timestamps are ISO strings in
JSON columns and ``datetime`` in typed ones. Money is integer cents.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from domain import events as ev
from domain import saga_events as sev
from domain.events import DomainEvent
from eventstore.envelope import RecordedEvent

Row = dict[str, Any]


class ProjectionError(Exception):
    """An event a read model cannot apply (for example an order event before its creation).

    Raised, never swallowed: the runner retries, then dead-letters the message.
    """


# --- order_summary and customer_orders ------------------------------------------------

_ORDER_STATUS: dict[type[DomainEvent], tuple[str, str]] = {
    ev.OrderSubmitted: ("submitted", "submitted_at"),
    ev.PaymentReceived: ("paid", "paid_at"),
    ev.OrderShipped: ("shipped", "shipped_at"),
    ev.OrderDelivered: ("delivered", "delivered_at"),
    ev.OrderCancelled: ("cancelled", "cancelled_at"),
}


def order_id_of(recorded: RecordedEvent) -> str:
    """The order id of an order stream ("order-<id>")."""
    return recorded.stream_id.removeprefix("order-")


def evolve_order(row: Row | None, recorded: RecordedEvent, event: DomainEvent) -> Row:
    """The order_summary row after ``event`` (``row`` is None before OrderCreated)."""
    at = recorded.recorded_at
    if isinstance(event, ev.OrderCreated):
        if row is not None:
            raise ProjectionError(f"order {event.order_id} created twice")
        return {
            "order_id": event.order_id,
            "customer_id": event.customer_id,
            "status": "draft",
            "lines": [],
            "total_cents": 0,
            "paid_cents": 0,
            "payment_id": None,
            "tracking_number": None,
            "carrier": None,
            "cancel_reason": None,
            "timeline": {"created_at": at.isoformat()},
            "version": recorded.version,
            "updated_at": at,
        }
    if row is None:
        raise ProjectionError(
            f"{recorded.event_type} for unknown order {order_id_of(recorded)!r} "
            f"(stream {recorded.stream_id} version {recorded.version})"
        )
    new = {**row, "version": recorded.version, "updated_at": at}
    if isinstance(event, ev.OrderItemAdded):
        lines = [dict(line) for line in row["lines"]]
        for line in lines:
            if line["sku"] == event.sku:
                line["quantity"] += event.quantity
                line["unit_price_cents"] = event.unit_price_cents
                break
        else:
            lines.append(event.model_dump(mode="json"))
        new["lines"] = lines
        new["total_cents"] = lines_total(lines)
    elif isinstance(event, ev.OrderItemRemoved):
        new["lines"] = [line for line in row["lines"] if line["sku"] != event.sku]
        new["total_cents"] = lines_total(new["lines"])
    if type(event) in _ORDER_STATUS:
        status, stamp = _ORDER_STATUS[type(event)]
        new["status"] = status
        new["timeline"] = {**row["timeline"], stamp: at.isoformat()}
    if isinstance(event, ev.OrderSubmitted):
        new["total_cents"] = event.total_cents
    elif isinstance(event, ev.PaymentReceived):
        new["payment_id"] = event.payment_id
        new["paid_cents"] = row["paid_cents"] + event.amount_cents
    elif isinstance(event, ev.OrderShipped):
        new["tracking_number"] = event.tracking_number
        new["carrier"] = event.carrier
    elif isinstance(event, ev.OrderCancelled):
        new["cancel_reason"] = event.reason
    return new


def lines_total(lines: list[Row]) -> int:
    """Sum of quantity times unit price over order lines, in cents."""
    return sum(int(line["quantity"]) * int(line["unit_price_cents"]) for line in lines)


def evolve_customer_order(row: Row | None, recorded: RecordedEvent, event: DomainEvent) -> Row:
    """The customer_orders row after ``event``: status and (once submitted) total."""
    at = recorded.recorded_at
    if isinstance(event, ev.OrderCreated):
        if row is not None:
            raise ProjectionError(f"order {event.order_id} created twice")
        return {
            "customer_id": event.customer_id,
            "order_id": event.order_id,
            "status": "draft",
            "total_cents": 0,
            "created_at": at,
            "updated_at": at,
        }
    if row is None:
        raise ProjectionError(
            f"{recorded.event_type} for unknown order {order_id_of(recorded)!r} "
            f"(stream {recorded.stream_id} version {recorded.version})"
        )
    new = {**row, "updated_at": at}
    if type(event) in _ORDER_STATUS:
        new["status"] = _ORDER_STATUS[type(event)][0]
    if isinstance(event, ev.OrderSubmitted):
        new["total_cents"] = event.total_cents
    return new


# --- inventory_levels ------------------------------------------------------------------


@dataclass
class StockDelta:
    """Changes to one SKU's row: counters to add, catalogue fields to set."""

    name: str | None = None
    unit_price_cents: int | None = None
    available: int = 0
    reserved: int = 0
    sold: int = 0
    updated_at: datetime | None = None


def stock_delta(delta: StockDelta, recorded: RecordedEvent, event: DomainEvent) -> None:
    """Fold one inventory event into ``delta`` (the stream id names the SKU)."""
    delta.updated_at = recorded.recorded_at
    match event:
        case ev.ProductRegistered():
            delta.name, delta.unit_price_cents = event.name, event.unit_price_cents
        case ev.ProductPriceChanged():
            delta.unit_price_cents = event.unit_price_cents
        case ev.StockAdded():
            delta.available += event.quantity
        case ev.StockReserved():
            delta.available -= event.quantity
            delta.reserved += event.quantity
        case ev.StockReservationReleased():
            delta.available += event.quantity
            delta.reserved -= event.quantity
        case ev.StockSold():
            delta.reserved -= event.quantity
            delta.sold += event.quantity
        case ev.StockReturned():
            delta.available += event.quantity
        case ev.StockReturnReversed():
            delta.available -= event.quantity


def sku_of(recorded: RecordedEvent) -> str:
    """The SKU of an inventory stream ("inventory-<sku>")."""
    return recorded.stream_id.removeprefix("inventory-")


# --- daily_sales -----------------------------------------------------------------------


@dataclass
class DaySales:
    """Counters to add to one day's daily_sales row."""

    orders: int = 0
    revenue_cents: int = 0
    cancellations: int = 0
    refunds: int = 0
    refunded_cents: int = 0


def day_of(recorded: RecordedEvent) -> date:
    """The UTC day an event was recorded on (analytics bucket)."""
    return recorded.recorded_at.date()


def sales_delta(days: dict[date, DaySales], recorded: RecordedEvent, event: DomainEvent) -> None:
    """Fold one event into the per-day counters.

    Orders count on submission, revenue on PaymentCharged (the payment stream is the
    money fact; the order's PaymentReceived mirrors it and is not counted twice),
    cancellations on OrderCancelled, refunds on PaymentRefunded.
    """
    if not isinstance(event, SALES_EVENTS):
        return
    day = days.setdefault(day_of(recorded), DaySales())
    match event:
        case ev.OrderSubmitted():
            day.orders += 1
        case ev.PaymentCharged():
            day.revenue_cents += event.amount_cents
        case ev.OrderCancelled():
            day.cancellations += 1
        case ev.PaymentRefunded():
            day.refunds += 1
            day.refunded_cents += event.amount_cents


SALES_EVENTS = (ev.OrderSubmitted, ev.PaymentCharged, ev.OrderCancelled, ev.PaymentRefunded)


# --- product_sales ---------------------------------------------------------------------


@dataclass
class ProductDelta:
    """Counters to add to one SKU's product_sales row."""

    name: str
    units: int = 0
    revenue_cents: int = 0


@dataclass
class ProductSalesState:
    """product_sales' memory of one order: its lines and whether they were sold."""

    lines: list[Row] = field(default_factory=list)
    submitted: bool = False


def product_sales_step(
    state: ProductSalesState | None,
    deltas: dict[str, ProductDelta],
    recorded: RecordedEvent,
    event: DomainEvent,
) -> ProductSalesState:
    """Fold one order event: lines count as sold on submission, and are taken back
    when a submitted order is cancelled."""
    if isinstance(event, ev.OrderCreated):
        return ProductSalesState()
    if state is None:
        raise ProjectionError(
            f"{recorded.event_type} for unknown order {order_id_of(recorded)!r} "
            f"(stream {recorded.stream_id} version {recorded.version})"
        )
    match event:
        case ev.OrderItemAdded():
            lines = [dict(line) for line in state.lines]
            for line in lines:
                if line["sku"] == event.sku:
                    line["quantity"] += event.quantity
                    line["unit_price_cents"] = event.unit_price_cents
                    break
            else:
                lines.append(event.model_dump(mode="json"))
            return ProductSalesState(lines, state.submitted)
        case ev.OrderItemRemoved():
            kept = [line for line in state.lines if line["sku"] != event.sku]
            return ProductSalesState(kept, state.submitted)
        case ev.OrderSubmitted():
            _count_lines(deltas, state.lines, +1)
            return ProductSalesState(state.lines, True)
        case ev.OrderCancelled() if state.submitted:
            _count_lines(deltas, state.lines, -1)
            return ProductSalesState(state.lines, False)
    return state


def _count_lines(deltas: dict[str, ProductDelta], lines: list[Row], sign: int) -> None:
    for line in lines:
        delta = deltas.setdefault(line["sku"], ProductDelta(line["name"]))
        delta.units += sign * int(line["quantity"])
        delta.revenue_cents += sign * int(line["quantity"]) * int(line["unit_price_cents"])


# --- saga_outcomes ---------------------------------------------------------------------


SAGA_PARKED = "compensation_parked"
"""The read model's status while any compensation (or forward step) waits for an operator."""


def _iso(at: datetime) -> str:
    return at.isoformat()


def _without(parked: list[Row], step: str) -> list[Row]:
    return [p for p in parked if p["step"] != step]


def evolve_saga(row: Row | None, recorded: RecordedEvent, event: DomainEvent) -> Row:
    """The saga read-model row after ``event``.

    ``status``: running → current step advances → completed (or the status the saga
    reports, e.g. ``awaiting_shipment``) → its own statuses (``SagaStatusChanged``);
    or compensating → ``compensation_parked`` while ``parked`` lists entries
    ``{step, phase, error, parked_at, escalated}`` → compensated. ``parked_steps`` and
    ``escalated_steps`` mirror the list by name (the analytics and the inbox filter).
    """
    at = recorded.recorded_at
    if isinstance(event, sev.SagaStarted):
        if row is not None:
            # The API appends SagaStarted with the journal's event id, so this is
            # the same fact seen twice only if the ids differ: keep the first row.
            return {**row, "keys": row.get("keys") or dict(event.keys)}
        return {
            "saga_id": event.saga_id,
            "saga_type": event.saga_type,
            "order_id": event.order_id,
            "status": "running",
            "reason": None,
            "failure": None,
            "current_step": "",
            "keys": dict(event.keys),
            "parked": [],
            "parked_steps": [],
            "escalated_steps": [],
            "started_at": at,
            "updated_at": at,
        }
    if row is None:
        raise ProjectionError(
            f"{recorded.event_type} for unknown saga (stream {recorded.stream_id} "
            f"version {recorded.version})"
        )
    new = {**row, "updated_at": at}
    parked: list[Row] = list(row.get("parked") or [])
    match event:
        case sev.SagaStepCompleted():
            new["current_step"] = event.step
        case sev.SagaCompleted():
            new["status"] = event.status or "completed"
        case sev.SagaStatusChanged():
            new["status"] = event.status
            if event.step:
                new["current_step"] = event.step
        case sev.CompensationParked() | sev.StepParked():
            phase = "forward" if isinstance(event, sev.StepParked) else "compensation"
            entry = {
                "step": event.step,
                "phase": phase,
                "error": event.error,
                # A retry that fails again parks anew: the wait restarts.
                "parked_at": _iso(at),
                "escalated": False,
            }
            parked = [*_without(parked, event.step), entry]
            new["status"] = SAGA_PARKED
            new["failure"] = event.error
        case sev.CompensationResolved() | sev.CompensationSkipped():
            was = next((p for p in parked if p["step"] == event.step), None)
            parked = _without(parked, event.step)
            if not parked and row["status"] == SAGA_PARKED:
                # A forward step unblocked goes on forward (its next status event
                # says where); an undone compensation resumes the compensation.
                forward = was is not None and was["phase"] == "forward"
                new["status"] = "running" if forward else "compensating"
        case sev.CompensationEscalated():
            parked = [{**p, "escalated": True} if p["step"] == event.step else p for p in parked]
        case sev.SagaCompensated():
            new["reason"] = event.reason
            new["failure"] = new.get("failure") or event.reason
            new["status"] = SAGA_PARKED if parked else "compensated"
    new["parked"] = parked
    new["parked_steps"] = [p["step"] for p in parked]
    new["escalated_steps"] = [p["step"] for p in parked if p["escalated"]]
    return new


def recompute_analytics(
    pairs: list[tuple[RecordedEvent, DomainEvent]],
) -> tuple[dict[date, DaySales], dict[str, ProductDelta]]:
    """Analytics from raw events in one pass (tests compare the projections to this)."""
    days: dict[date, DaySales] = {}
    products: dict[str, ProductDelta] = {}
    orders: dict[str, ProductSalesState] = defaultdict(ProductSalesState)
    for recorded, event in pairs:
        sales_delta(days, recorded, event)
        if recorded.stream_type == "Order":
            key = recorded.stream_id
            orders[key] = product_sales_step(orders.get(key), products, recorded, event)
    return days, products


# --- return_summary and daily_returns ---------------------------------------------------


def return_id_of(recorded: RecordedEvent) -> str:
    """The return id of a return stream ("return-<id>")."""
    return recorded.stream_id.removeprefix("return-")


_RETURN_STATUS: dict[type[DomainEvent], str] = {
    ev.ReturnReceived: "received",
    ev.ReturnExpired: "expired",
    ev.ReturnCancelled: "cancelled",
    ev.ReturnRefunded: "refunded",
    ev.ReturnCompleted: "completed",
}


def evolve_return(row: Row | None, recorded: RecordedEvent, event: DomainEvent) -> Row:
    """The return_summary row after ``event`` (``row`` is None before ReturnOpened)."""
    at = recorded.recorded_at
    if isinstance(event, ev.ReturnOpened):
        if row is not None:
            raise ProjectionError(f"return {event.return_id} opened twice")
        return {
            "return_id": event.return_id,
            "order_id": event.order_id,
            "customer_id": event.customer_id,
            "status": "opened",
            "reason": event.reason,
            "lines": [line.model_dump(mode="json") for line in event.lines],
            "total_cents": event.total_cents,
            "refunded_cents": 0,
            "close_reason": None,
            "timeline": {"opened_at": at.isoformat()},
            "version": recorded.version,
            "updated_at": at,
        }
    if row is None:
        raise ProjectionError(
            f"{recorded.event_type} for unknown return {return_id_of(recorded)!r} "
            f"(stream {recorded.stream_id} version {recorded.version})"
        )
    new = {**row, "version": recorded.version, "updated_at": at}
    status = _RETURN_STATUS.get(type(event))
    if status is not None:
        new["status"] = status
        new["timeline"] = {**row["timeline"], f"{status}_at": at.isoformat()}
    if isinstance(event, ev.ReturnRefunded):
        new["refunded_cents"] = event.amount_cents
    elif isinstance(event, ev.ReturnExpired | ev.ReturnCancelled):
        new["close_reason"] = event.reason
    return new


@dataclass
class DayReturns:
    """Counters to add to one day's daily_returns row."""

    opened: int = 0
    units: int = 0
    expired: int = 0
    cancelled: int = 0
    refunded: int = 0
    refunded_cents: int = 0


def returns_delta(
    days: dict[date, DayReturns], recorded: RecordedEvent, event: DomainEvent
) -> None:
    """Fold one return event into the per-day counters (opened and units on
    ReturnOpened, refunds and their cents on ReturnRefunded)."""
    if not isinstance(event, RETURN_EVENTS):
        return
    day = days.setdefault(day_of(recorded), DayReturns())
    match event:
        case ev.ReturnOpened():
            day.opened += 1
            day.units += sum(line.quantity for line in event.lines)
        case ev.ReturnExpired():
            day.expired += 1
        case ev.ReturnCancelled():
            day.cancelled += 1
        case ev.ReturnRefunded():
            day.refunded += 1
            day.refunded_cents += event.amount_cents


RETURN_EVENTS = (ev.ReturnOpened, ev.ReturnExpired, ev.ReturnCancelled, ev.ReturnRefunded)
