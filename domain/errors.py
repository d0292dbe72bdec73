"""Domain errors: every refusal names the aggregate, its state and the refused command.

Workflows treat any ``DomainError`` as a business failure (non-retryable): retrying
the same command against the same state gives the same answer.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every error raised by the domain layer."""


class CommandRefused(DomainError):
    """An aggregate refused a command: the state allows it, but its arguments break a rule.

    The message reads ``"<Aggregate> <id> is <state>: cannot <command>: <reason>"``.
    """

    def __init__(
        self,
        aggregate: str,
        aggregate_id: str,
        state: str,
        command: str,
        reason: str | None = None,
    ) -> None:
        self.aggregate = aggregate
        self.aggregate_id = aggregate_id
        self.state = state
        self.command = command
        self.reason = reason
        message = f"{aggregate} {aggregate_id} is {state}: cannot {command}"
        if reason:
            message = f"{message}: {reason}"
        super().__init__(message)


class IllegalTransition(CommandRefused):
    """The aggregate's current state does not accept the command at all.

    Example: ``Order o-1 is cancelled: cannot ship``.
    """


class InsufficientStock(CommandRefused):
    """A reservation asked for more units than the SKU has available."""

    def __init__(self, sku: str, requested: int, available: int) -> None:
        self.sku = sku
        self.requested = requested
        self.available = available
        super().__init__(
            "Inventory",
            sku,
            "registered",
            "reserve",
            f"insufficient stock: requested {requested}, available {available}",
        )


class RefundExceedsCharge(CommandRefused):
    """A refund asked for more than was charged minus what was already refunded."""

    def __init__(
        self, order_id: str, state: str, requested_cents: int, refundable_cents: int
    ) -> None:
        self.order_id = order_id
        self.requested_cents = requested_cents
        self.refundable_cents = refundable_cents
        super().__init__(
            "Payment",
            order_id,
            state,
            "refund",
            f"refund of {requested_cents} cents exceeds the refundable {refundable_cents} cents",
        )


class UnknownEventType(DomainError):
    """No event class is registered under this ``event_type``."""

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(f"unknown event type {event_type!r}")


class InvalidCommand(DomainError):
    """A command failed validation; ``problems`` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))
