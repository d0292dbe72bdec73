"""One problem format (RFC 9457 ``application/problem+json``) for every 4xx and 5xx.

Domain and service-layer errors map to HTTP by meaning: a wrong state is 409, an
unknown id 404, invalid input 422. Routes raise these (or let the use cases raise
them) and never build responses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

from application.errors import (
    ApplicationError,
    DeadLetterNotResolved,
    IdempotencyKeyReused,
    InvalidConsistencyToken,
    InvalidInput,
    NotFound,
    NotVisibleYet,
    Refused,
    Unavailable,
)
from domain.errors import CommandRefused, DomainError, IllegalTransition, InvalidCommand
from eventstore.envelope import ConcurrencyError, InvalidStreamId

log = logging.getLogger("sagaflow.api")
PROBLEM = "application/problem+json"


class FieldProblem(BaseModel):
    """One invalid field: where it is and what is wrong."""

    field: str
    message: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldProblem] | None = None


class ApiError(Exception):
    """An error a route raises to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.errors, self.headers = errors, headers


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    errors: list[FieldProblem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON response carrying a Problem."""
    body = Problem(
        type=f"https://sagaflow.dev/problems/{status}",
        title=title,
        status=status,
        detail=detail,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM, headers=headers
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def application_problem(exc: ApplicationError) -> tuple[int, str]:
    """The status and title of a service-layer error (its detail is ``str(exc)``)."""
    match exc:
        case NotVisibleYet():
            return 404, "not visible yet"
        case NotFound(kind=kind):
            return 404, f"{kind} not found"
        case Refused():
            return 409, "refused"
        case IdempotencyKeyReused():
            return 409, "idempotency key reused"
        case DeadLetterNotResolved():
            return 409, "dead letter not resolved"
        case InvalidInput():
            return 422, "invalid input"
        case InvalidConsistencyToken():
            return 422, "invalid consistency token"
        case Unavailable(what=what):
            return 503, f"{what} unavailable"
    return 409, "refused"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(ApplicationError)
    async def _application_error(_: Request, exc: ApplicationError) -> JSONResponse:
        if isinstance(exc, InvalidInput):
            errors = [FieldProblem(field=f, message=m) for f, m in exc.problems]
            return problem_response(422, "invalid input", str(exc), errors)
        status, title = application_problem(exc)
        return problem_response(status, title, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            # Why 400, not 422: the body could not be read at all; 422 is for a
            # well-formed body whose fields are wrong.
            return problem_response(400, "malformed body", "the body is not valid JSON")
        errors = [
            FieldProblem(field=_field_name(tuple(e["loc"])), message=e["msg"]) for e in exc.errors()
        ]
        return problem_response(422, "invalid request", "the request has invalid fields", errors)

    @app.exception_handler(InvalidCommand)
    async def _invalid_command(_: Request, exc: InvalidCommand) -> JSONResponse:
        errors = [FieldProblem(field="body", message=p) for p in exc.problems]
        return problem_response(422, "invalid command", str(exc), errors)

    @app.exception_handler(IllegalTransition)
    async def _wrong_state(_: Request, exc: IllegalTransition) -> JSONResponse:
        return problem_response(409, "wrong state", str(exc))

    @app.exception_handler(CommandRefused)
    async def _refused(_: Request, exc: CommandRefused) -> JSONResponse:
        return problem_response(409, "command refused", str(exc))

    @app.exception_handler(ConcurrencyError)
    async def _conflict(_: Request, exc: ConcurrencyError) -> JSONResponse:
        return problem_response(409, "concurrent change", f"{exc}; retry the request")

    @app.exception_handler(InvalidStreamId)
    async def _bad_id(_: Request, exc: InvalidStreamId) -> JSONResponse:
        return problem_response(422, "invalid id", str(exc))

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return problem_response(409, "refused", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "error")
        return problem_response(exc.status_code, title, str(exc.detail), headers=exc.headers)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return problem_response(
            503,
            "database unavailable",
            "PostgreSQL is not reachable right now; retry",
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(RPCError)
    async def _temporal_away(_: Request, exc: RPCError) -> JSONResponse:
        log.warning("Temporal call failed: %s", exc)
        return problem_response(
            503,
            "Temporal unavailable",
            f"the workflow service did not answer: {exc.message}",
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "internal error", "an unexpected error occurred")


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM: {}}, "description": text}
    for status, text in (
        (401, "missing or unknown API key"),
        (403, "the API key lacks the scope"),
        (404, "unknown id"),
        (409, "wrong state or conflicting request"),
        (413, "request body too large"),
        (422, "invalid input, with the field errors"),
        (429, "too far behind: retry after the Retry-After seconds"),
        (503, "a dependency (PostgreSQL, Temporal) is unavailable: retry"),
    )
}
