"""What a use case refuses, named by meaning; the API maps each to a problem document
(``api/errors.py``) and the CLI to a one-line message. Domain errors pass through."""

from __future__ import annotations


class ApplicationError(Exception):
    """Base of the service layer's errors; ``str()`` is the one-line explanation."""


class NotFound(ApplicationError):
    """No ``kind`` with this id."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"no {kind} with id {ident!r}")


class NotVisibleYet(ApplicationError):
    """The write behind a consistency token has not reached the read model in time."""

    def __init__(self, kind: str, ident: str, waited_s: float) -> None:
        super().__init__(
            f"{kind} {ident!r} is not in the read model yet: the projection has not "
            f"reached your consistency token within {waited_s}s"
        )


class Refused(ApplicationError):
    """The saga refused a request (wrong state, nothing parked, ...); nothing changed."""


class IdempotencyKeyReused(ApplicationError):
    """An Idempotency-Key already used with another request body."""

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request body")


class DeadLetterNotResolved(ApplicationError):
    """A dead letter already resolved, or failing again on replay."""


class InvalidConsistencyToken(ApplicationError):
    """A consistency token that is not one this service handed out."""

    def __init__(self, token: str, why: str = "is not a token") -> None:
        super().__init__(f"{token[:80]!r} {why}")


class Unavailable(ApplicationError):
    """A dependency the use case needs is not connected (``what`` names it)."""

    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        super().__init__(detail)


class UnknownSagaType(NotFound):
    """No saga type of this name is registered; the message names the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__("saga type", name)
        self.known = known
        self.args = (f"unknown saga type {name!r}; known types: {', '.join(known) or 'none'}",)

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidInput(ApplicationError):
    """A saga input that does not fit its type's model; ``problems`` are (field, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("the input has invalid fields: " + ", ".join(f for f, _ in problems))
