"""Sagas of every registered type: the types, start, list, read, steer, and the
fleet-wide inbox of parked compensations. Each route calls ``application.sagas``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Response

from api.deps import Admin, Reader, Writer
from api.errors import PROBLEM_RESPONSES
from api.models import (
    BulkRetryIn,
    BulkRetryOut,
    CompensationDecisionIn,
    EventOut,
    Ident,
    SagaAccepted,
    SagaActionOut,
    SagaCancelIn,
)
from application import sagas

router = APIRouter(tags=["sagas"], responses=PROBLEM_RESPONSES)

# Why a pattern on free-text filters: PostgreSQL text cannot hold NUL (nor should a
# filter hold control characters); refuse them as 422 rather than fail in the query.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
KEY_FILTER = r"^[^:\x00-\x1f\x7f]+:[^\x00-\x1f\x7f]*$"
TypeName = Annotated[str, Query(alias="type", min_length=1, max_length=100, pattern=PRINTABLE)]
StepName = Annotated[str, Query(min_length=1, max_length=100, pattern=PRINTABLE)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="same key + same body = same saga; another body is refused (409)",
    ),
]


@router.get("/saga-types")
async def saga_types(c: Reader) -> list[dict[str, Any]]:
    """Registered saga types: input JSON schema, steps with kinds, waits, business keys."""
    return sagas.describe_types(c.ctx)


# Why the inbox routes come first: ``/sagas/parked`` would otherwise match
# ``/sagas/{saga_id}``.
@router.get("/sagas/parked")
async def parked(
    c: Reader,
    saga_type: TypeName | None = None,
    step: StepName | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Every parked step of every saga type, longest waiting first, with its wait."""
    return await sagas.inbox(c.ctx, saga_type=saga_type, step=step, limit=limit)


@router.post("/sagas/parked/retry", response_model=BulkRetryOut)
async def retry_parked(c: Admin, body: BulkRetryIn | None = None) -> dict[str, Any]:
    """Retry every parked step (optionally of one type and step), e.g. after an outage."""
    body = body or BulkRetryIn()
    return await sagas.retry_parked(
        c.ctx, saga_type=body.saga_type, step=body.step, note=body.note, operator=c.principal
    )


# Why not ``POST /sagas/{saga_type}`` (its first path): it is the same URL template
# as ``GET /sagas/{saga_id}``, so the schema could not say which methods a URL such
# as ``/sagas/x`` allows, nor a tester check it.
@router.post("/saga-types/{saga_type}/sagas", status_code=202, response_model=SagaAccepted)
async def start_saga(
    saga_type: Annotated[str, Path(min_length=1, max_length=100)],
    response: Response,
    c: Writer,
    body: Annotated[dict[str, Any], Body(description="the input of the saga type")],
    idempotency_key: IdempotencyKey = None,
) -> SagaAccepted:
    """Start a saga of ``saga_type`` (input validated against the type's model)."""
    accepted = await sagas.start(
        c.ctx, saga_type, body, idempotency_key=idempotency_key, user_id=c.principal
    )
    location = f"/sagas/{accepted.saga_id}"
    response.headers["Location"] = location
    return SagaAccepted(
        saga_id=accepted.saga_id,
        saga_type=accepted.saga_type,
        consistency_token=accepted.consistency_token,
        location=location,
    )


@router.get("/sagas")
async def list_sagas(
    c: Reader,
    saga_type: TypeName | None = None,
    status: Annotated[str | None, Query(min_length=1, max_length=100, pattern=PRINTABLE)] = None,
    key: Annotated[
        str | None,
        Query(
            min_length=3,
            max_length=300,
            pattern=KEY_FILTER,
            description="a business key as Name:value, e.g. CustomerId:c-1",
        ),
    ] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Sagas from the read model, most recently changed first, filtered and paginated."""
    return await sagas.list_sagas(
        c.ctx, saga_type=saga_type, status=status, key=key, page=page, page_size=page_size
    )


@router.get("/sagas/{saga_id}")
async def get_saga(saga_id: Ident, c: Reader) -> dict[str, Any]:
    """The saga's read-model row, plus its live status when Temporal answers (``source``)."""
    return await sagas.show(c.ctx, saga_id)


@router.get("/sagas/{saga_id}/plan")
async def saga_plan(saga_id: Ident, c: Reader) -> dict[str, Any]:
    """The compensation a cancel or failure would run now, with each step's outcome."""
    return await sagas.plan(c.ctx, saga_id)


@router.get("/sagas/{saga_id}/events", response_model=list[EventOut])
async def saga_events(saga_id: Ident, c: Reader) -> list[dict[str, Any]]:
    """The saga's journal events, oldest first."""
    return await sagas.events(c.ctx, saga_id)


@router.post("/sagas/{saga_id}/cancel", response_model=SagaActionOut)
async def cancel_saga(saga_id: Ident, c: Writer, body: SagaCancelIn | None = None) -> Any:
    """Cancel the saga: it compensates (refused once past its pivot)."""
    reason = (body or SagaCancelIn()).reason
    return await sagas.cancel(c.ctx, saga_id, f"{reason} (by {c.principal})")


@router.post("/sagas/{saga_id}/retry-compensation", response_model=SagaActionOut)
async def retry_compensation(saga_id: Ident, body: CompensationDecisionIn, c: Admin) -> Any:
    """Retry a parked step now; the result is its status after the attempt."""
    return await sagas.decide(
        c.ctx, saga_id, body.step, "retry", note=body.note, operator=c.principal
    )


@router.post("/sagas/{saga_id}/resolve", response_model=SagaActionOut)
async def resolve_compensation(saga_id: Ident, body: CompensationDecisionIn, c: Admin) -> Any:
    """Mark a parked compensation as done by hand (the note says how)."""
    return await sagas.decide(
        c.ctx, saga_id, body.step, "resolve", note=body.note, operator=c.principal
    )


@router.post("/sagas/{saga_id}/skip", response_model=SagaActionOut)
async def skip_compensation(saga_id: Ident, body: CompensationDecisionIn, c: Admin) -> Any:
    """Give a parked step up: it is *not* done (a known loss, recorded with the note)."""
    return await sagas.decide(
        c.ctx, saga_id, body.step, "skip", note=body.note, operator=c.principal
    )
