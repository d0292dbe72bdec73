"""Notifications: the Notifier port, a logging notifier, and the confirmation activity."""

from __future__ import annotations

import logging
from typing import Protocol

from temporalio import activity

from activities._support import event_metadata
from domain.saga_events import ConfirmationSent, notification_stream
from eventstore import ANY_VERSION, EventStore, NewEvent, deterministic_event_id
from workflows.models import SendConfirmation

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """The notification port (e-mail, SMS, push). Idempotent by ``idempotency_key``."""

    channel: str

    async def send(self, *, recipient: str, subject: str, body: str, idempotency_key: str) -> None:
        """Deliver one message; raise to have the activity retry."""
        ...


class LoggingNotifier:
    """Writes messages to the log: the development stand-in for a real channel."""

    channel = "log"

    async def send(self, *, recipient: str, subject: str, body: str, idempotency_key: str) -> None:
        """Log the message."""
        log.info("notify %s: %s (%s)", recipient, subject, idempotency_key)


class NotificationActivities:
    """Send messages through the port and record them on ``notification-<order_id>``."""

    def __init__(self, store: EventStore, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier

    @activity.defn(name="send_confirmation")
    async def send_confirmation(self, req: SendConfirmation) -> None:
        """Send the order confirmation, then record ConfirmationSent (once)."""
        recipient = req.customer_id
        await self.notifier.send(
            recipient=recipient,
            subject=f"Order {req.order_id} confirmed",
            body=f"Your order {req.order_id} is confirmed: {req.total_cents / 100:.2f} charged.",
            idempotency_key=f"{req.ctx.workflow_id}/{req.ctx.step}",
        )
        event = ConfirmationSent(
            order_id=req.order_id, channel=self.notifier.channel, recipient=recipient
        )
        # Why ANY_VERSION is safe: the deterministic id makes a retried append a
        # no-op, and the stream is an audit log without invariants to protect.
        await self.store.append(
            notification_stream(req.order_id),
            [
                NewEvent(
                    event,
                    event_id=deterministic_event_id(req.ctx.workflow_id, req.ctx.step, 0),
                    metadata=event_metadata(req.ctx),
                )
            ],
            ANY_VERSION,
            stream_type="Notification",
        )
