"""The service layer: every use case in one place, called by the API and the CLI alike.

One module per role (``orders``, ``catalogue``, ``operations``). Use cases take their
dependencies as arguments or from a :class:`Context` built once per process (the
API's lifespan, a CLI command); they raise domain errors or the errors of
``application.errors`` and know nothing of HTTP or the terminal.
"""

from application.context import Context
from application.errors import (
    ApplicationError,
    DeadLetterNotResolved,
    IdempotencyKeyReused,
    InvalidConsistencyToken,
    NotFound,
    NotVisibleYet,
    Refused,
    Unavailable,
)

__all__ = [
    "ApplicationError",
    "Context",
    "DeadLetterNotResolved",
    "IdempotencyKeyReused",
    "InvalidConsistencyToken",
    "NotFound",
    "NotVisibleYet",
    "Refused",
    "Unavailable",
]
