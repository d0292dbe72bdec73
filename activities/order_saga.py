"""The order saga's activity implementations, built for the worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.inventory import InventoryActivities
from activities.notification import NotificationActivities
from activities.order import OrderActivities
from activities.payment import PaymentActivities, SimulatedPaymentProvider
from activities.wiring import ActivityDeps


def build_activities(deps: ActivityDeps) -> list[Callable[..., Any]]:
    """Every activity of the order saga, bound to its dependencies."""
    s = deps.settings
    provider = deps.provider or SimulatedPaymentProvider(
        latency_ms=s.payment_latency_ms,
        decline_rate=s.payment_decline_rate,
        transient_error_rate=s.payment_transient_error_rate,
        refund_outage_file=s.payment_refund_outage_file,
    )
    snap, faults = s.snapshot_every, deps.faults
    inventory = InventoryActivities(deps.store, snapshot_every=snap, faults=faults)
    payment = PaymentActivities(deps.store, provider, snapshot_every=snap, faults=faults)
    order = OrderActivities(deps.store, snapshot_every=snap, faults=faults)
    notification = NotificationActivities(deps.store, deps.notifier)
    return [
        inventory.reserve_stock,
        inventory.release_stock,
        inventory.sell_stock,
        payment.charge_payment,
        payment.refund_payment,
        order.create_order,
        order.cancel_order,
        order.ship_order,
        order.deliver_order,
        notification.send_confirmation,
    ]
