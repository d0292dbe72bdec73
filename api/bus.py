"""A small command bus and query bus: routes translate HTTP, handlers do the work.

Each message type (a frozen dataclass) has exactly one handler; dispatching an
unregistered type is a programming error, caught at start-up by ``check``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Handler = Callable[[Any], Awaitable[Any]]


class Bus:
    """Maps message types to their handlers."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._handlers: dict[type, Handler] = {}

    def register(self, message_type: type, handler: Handler) -> None:
        """Register the one handler of ``message_type``."""
        if message_type in self._handlers:
            raise ValueError(f"{self.kind} {message_type.__name__} already has a handler")
        self._handlers[message_type] = handler

    async def dispatch(self, message: Any) -> Any:
        """Run the handler of ``message``'s type and return its result."""
        try:
            handler = self._handlers[type(message)]
        except KeyError:
            raise LookupError(f"no handler for {self.kind} {type(message).__name__}") from None
        return await handler(message)

    def check(self, message_types: Iterable[type]) -> None:
        """Fail fast when a message type has no handler."""
        missing = [t.__name__ for t in message_types if t not in self._handlers]
        if missing:
            raise LookupError(f"{self.kind}s without a handler: {', '.join(missing)}")
