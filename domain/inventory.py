"""The Inventory aggregate: one per SKU, holding its catalogue entry and stock levels."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from domain.aggregate import Aggregate
from domain.errors import InsufficientStock
from domain.events import (
    DomainEvent,
    ProductPriceChanged,
    ProductRegistered,
    StockAdded,
    StockReservationReleased,
    StockReserved,
    StockReturned,
    StockReturnReversed,
    StockSold,
    inventory_stream,
)


class Reservation(NamedTuple):
    """Units set aside for an order until it ships (sold) or is compensated (released)."""

    order_id: str
    quantity: int


class Inventory(Aggregate):
    """Stock of one SKU (id = sku).

    Invariant: ``available + reserved + sold == stocked`` and ``reserved`` is the sum
    of the open reservations. Only open reservations are kept, so a reservation id
    can be reused once it was released or sold.

    Reservations and restocked returns are sub-entities (``entity_fields``): the
    snapshot holds the totals only. Why: with thousands of orders awaiting shipment
    a SKU holds thousands of open reservations, and a snapshot carrying them made
    every reserve load, parse and rebuild all of them (the cost of a new order grew
    with what was open). A command on one reservation loads that reservation's
    events by key (``Repository.load(sku, entity=("reservation_id", rid))``).
    """

    stream_type = "Inventory"
    snapshot_schema = 2
    entity_fields: ClassVar[tuple[str, ...]] = ("reservation_id", "return_id")

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.registered = False
        self.name: str | None = None
        self.unit_price_cents: int | None = None
        self.stocked = 0
        self.available = 0
        self.reserved = 0
        self.sold = 0
        self._reservations: dict[str, Reservation] = {}
        # units restocked per return id (kept: a retried restock or reversal finds it)
        self._returns: dict[str, Reservation] = {}

    @property
    def sku(self) -> str:
        """The SKU (same as ``id``)."""
        return self.id

    @property
    def stream_id(self) -> str:
        """``inventory-<sku>``."""
        return inventory_stream(self.id)

    @property
    def state_name(self) -> str:
        """``"unregistered"`` until the product is registered, then ``"registered"``."""
        return "registered" if self.registered else "unregistered"

    def reservation(self, reservation_id: str) -> Reservation | None:
        """The open reservation ``reservation_id``, or None (never made, released, sold)."""
        self._require_entity("reservation_id", reservation_id)
        return self._reservations.get(reservation_id)

    def restocked_return(self, return_id: str) -> Reservation | None:
        """The units restocked for ``return_id`` (not reversed), or None."""
        self._require_entity("return_id", return_id)
        return self._returns.get(return_id)

    @property
    def reservations(self) -> dict[str, Reservation]:
        """Every open reservation by id (an aggregate replayed from its first event)."""
        self._require_complete("the list of open reservations")
        return dict(self._reservations)

    @property
    def returns(self) -> dict[str, Reservation]:
        """Every restocked return by id (an aggregate replayed from its first event)."""
        self._require_complete("the list of restocked returns")
        return dict(self._returns)

    # --- commands -----------------------------------------------------------------

    def register(self, name: str, unit_price_cents: int) -> None:
        """Put the SKU in the catalogue (once)."""
        self._require_state("register", "unregistered")
        self._require_text("register", "name", name)
        self._require_non_negative("register", "unit_price_cents", unit_price_cents)
        self._raise_event(
            ProductRegistered(sku=self.id, name=name, unit_price_cents=unit_price_cents)
        )

    def change_price(self, unit_price_cents: int) -> None:
        """Set a new unit price (existing order lines keep theirs)."""
        self._require_state("change_price", "registered")
        self._require_non_negative("change_price", "unit_price_cents", unit_price_cents)
        self._raise_event(ProductPriceChanged(unit_price_cents=unit_price_cents))

    def add_stock(self, quantity: int) -> None:
        """Receive ``quantity`` units into available stock."""
        self._require_state("add_stock", "registered")
        self._require_positive("add_stock", "quantity", quantity)
        self._raise_event(StockAdded(quantity=quantity))

    def reserve(self, reservation_id: str, order_id: str, quantity: int) -> None:
        """Set aside ``quantity`` available units for ``order_id``."""
        self._require_state("reserve", "registered")
        self._require_text("reserve", "reservation_id", reservation_id)
        self._require_text("reserve", "order_id", order_id)
        self._require_positive("reserve", "quantity", quantity)
        if self.reservation(reservation_id) is not None:
            self._refuse("reserve", f"reservation {reservation_id} already exists")
        if quantity > self.available:
            raise InsufficientStock(self.id, quantity, self.available)
        self._raise_event(
            StockReserved(reservation_id=reservation_id, order_id=order_id, quantity=quantity)
        )

    def release(self, reservation_id: str) -> None:
        """Return an open reservation to available stock (compensation)."""
        reservation = self._open_reservation("release", reservation_id)
        self._raise_event(
            StockReservationReleased(
                reservation_id=reservation_id,
                order_id=reservation.order_id,
                quantity=reservation.quantity,
            )
        )

    def sell(self, reservation_id: str) -> None:
        """Turn an open reservation into a sale (the order shipped)."""
        reservation = self._open_reservation("sell", reservation_id)
        self._raise_event(
            StockSold(
                reservation_id=reservation_id,
                order_id=reservation.order_id,
                quantity=reservation.quantity,
            )
        )

    def restock_return(self, return_id: str, order_id: str, quantity: int) -> None:
        """Put ``quantity`` returned units back into available stock (once per return)."""
        self._require_state("restock_return", "registered")
        self._require_text("restock_return", "return_id", return_id)
        self._require_positive("restock_return", "quantity", quantity)
        if self.restocked_return(return_id) is not None:
            self._refuse("restock_return", f"return {return_id} is already restocked")
        self._raise_event(StockReturned(return_id=return_id, order_id=order_id, quantity=quantity))

    def reverse_return(self, return_id: str) -> None:
        """Take a return's restocked units out again (compensation of the restock)."""
        self._require_state("reverse_return", "registered")
        restocked = self.restocked_return(return_id)
        if restocked is None:
            self._refuse("reverse_return", f"return {return_id} was not restocked")
        if restocked.quantity > self.available:
            raise InsufficientStock(self.id, restocked.quantity, self.available)
        self._raise_event(
            StockReturnReversed(
                return_id=return_id, order_id=restocked.order_id, quantity=restocked.quantity
            )
        )

    def _open_reservation(self, command: str, reservation_id: str) -> Reservation:
        self._require_state(command, "registered")
        reservation = self.reservation(reservation_id)
        if reservation is None:
            self._refuse(
                command, f"no open reservation {reservation_id} (unknown, released or sold)"
            )
        return reservation

    # --- state changes ------------------------------------------------------------

    def _when(self, event: DomainEvent) -> None:
        match event:
            case ProductRegistered():
                self.registered = True
                self.name = event.name
                self.unit_price_cents = event.unit_price_cents
            case ProductPriceChanged():
                self.unit_price_cents = event.unit_price_cents
            case StockAdded():
                self.stocked += event.quantity
                self.available += event.quantity
            case StockReserved():
                self.available -= event.quantity
                self.reserved += event.quantity
            case StockReservationReleased():
                self.reserved -= event.quantity
                self.available += event.quantity
            case StockSold():
                self.reserved -= event.quantity
                self.sold += event.quantity
            case StockReturned():
                self.stocked += event.quantity
                self.available += event.quantity
            case StockReturnReversed():
                self.stocked -= event.quantity
                self.available -= event.quantity
            case _:
                self._unknown_event(event)
        self._track(event)

    def _track(self, event: DomainEvent) -> None:
        # Why pop, not del: after a snapshot, an event of a sub-entity that was not
        # loaded closes something this instance never saw open.
        match event:
            case StockReserved():
                self._reservations[event.reservation_id] = Reservation(
                    event.order_id, event.quantity
                )
            case StockReservationReleased() | StockSold():
                self._reservations.pop(event.reservation_id, None)
            case StockReturned():
                self._returns[event.return_id] = Reservation(event.order_id, event.quantity)
            case StockReturnReversed():
                self._returns.pop(event.return_id, None)
            case _:
                pass

    # --- snapshots ----------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """JSON-safe totals; reservations and returns are not in it (``entity_fields``)."""
        return {
            "available": self.available,
            "name": self.name,
            "registered": self.registered,
            "reserved": self.reserved,
            "sold": self.sold,
            "stocked": self.stocked,
            "unit_price_cents": self.unit_price_cents,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.available = state["available"]
        self.name = state["name"]
        self.registered = state["registered"]
        self.reserved = state["reserved"]
        self.sold = state["sold"]
        self.stocked = state["stocked"]
        self.unit_price_cents = state["unit_price_cents"]
