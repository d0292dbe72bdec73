"""Saga use cases for every registered type: describe the types, start one, list and
read them from the saga read model, steer them (cancel, operator decisions on parked
steps) and work the fleet-wide inbox of parked compensations.

A refused request writes nothing: the type and the input are checked before any
I/O, and the engine's update validators refuse a decision on a step that is not
parked before anything reaches the workflow history.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from application.context import Context
from application.errors import InvalidInput, NotFound, Refused, UnknownSagaType
from application.orders import (
    claim_idempotency_key,
    release_idempotency_key,
    request_hash,
    saga_started_token,
)
from domain.saga_events import saga_stream
from projections import queries
from workflows import client as engine
from workflows import registry as reg
from workflows.models import SagaOptions
from workflows.registry import SagaType
from workflows.visibility import input_keys

SAGA_NAMESPACE = uuid.UUID("0b7e4c52-93f1-4a5e-8d0c-3f6a1d2e9b41")
"""Saga ids derived from Idempotency-Keys: ``uuid5(SAGA_NAMESPACE, "<type>:<key>")``."""

BULK_RETRY_CONCURRENCY = 8
"""Parked steps retried at once by ``retry_parked`` (each retry waits for its attempt)."""

T = TypeVar("T")


@dataclass(frozen=True)
class SagaAccepted:
    """A started saga: its id, type and the token that reads the write back."""

    saga_id: str
    saga_type: str
    consistency_token: str


def saga_type(ctx: Context, name: str) -> SagaType:
    """The registered type ``name``; UnknownSagaType (404) names the known ones."""
    try:
        return ctx.registry.get(name)
    except reg.UnknownSagaType:
        raise UnknownSagaType(name, ctx.registry.names) from None


def describe_types(ctx: Context) -> list[dict[str, Any]]:
    """Every registered type: input JSON schema, steps with kinds, waits, business keys."""
    return [_describe(t) for t in ctx.registry]


def _describe(t: SagaType) -> dict[str, Any]:
    d = t.definition
    return {
        "name": t.name,
        "description": d.description,
        "input_schema": TypeAdapter(d.input).json_schema(),
        "steps": [
            {
                "name": s.name,
                "kind": str(s.kind),
                "compensation": s.compensation_name if s.compensation or s.undo else "",
                "parallel": s.parallel,
                "description": s.description,
            }
            for s in d.steps
        ],
        "waits": [
            {"name": w.name, "description": w.description, "cancellable": w.cancellable}
            for w in d.waits
        ],
        "keys": [{"name": k.name, "type": k.search_type} for k in d.keys],
    }


def parse_input(ctx: Context, t: SagaType, payload: Any) -> Any:
    """The type's input model built from ``payload``; InvalidInput (422) names the fields."""
    if "\\u0000" in json.dumps(payload, default=str):
        # PostgreSQL's jsonb cannot store NUL: refuse it before the saga starts.
        raise InvalidInput([("body", "text may not contain NUL characters")])
    try:
        value: Any = TypeAdapter(t.definition.input).validate_python(payload)
    except ValidationError as exc:
        raise InvalidInput(
            [(".".join(str(p) for p in e["loc"]) or "body", e["msg"]) for e in exc.errors()]
        ) from None
    fields = {f.name: f for f in dataclasses.fields(value)}
    if isinstance(payload, dict) and "options" not in payload and "options" in fields:
        current = value.options
        if isinstance(current, SagaOptions):
            # Why: the dataclass default is not this deployment's tuning; the
            # order route freezes the settings' options into the input too.
            value = dataclasses.replace(value, options=engine.saga_options(ctx.settings))
    return value


async def start(
    ctx: Context,
    type_name: str,
    payload: Any,
    *,
    idempotency_key: str | None = None,
    user_id: str = "",
) -> SagaAccepted:
    """Validate the input, claim the idempotency key, start the saga, return a token.

    The saga id is the type's own (``definition.saga_id``) when it declares one;
    else derived from the Idempotency-Key, so retries converge on one saga.
    """
    t = saga_type(ctx, type_name)
    saga_input = parse_input(ctx, t, payload)
    client = ctx.require_temporal()
    if t.definition.saga_id is not None:
        saga_id = t.definition.saga_id(saga_input)
    elif idempotency_key:
        saga_id = str(uuid.uuid5(SAGA_NAMESPACE, f"{t.name}:{idempotency_key}"))
    else:
        saga_id = str(uuid.uuid4())
    claimed = False
    key = f"saga:{t.name}:{idempotency_key}" if idempotency_key else ""
    if key:
        claimed = await claim_idempotency_key(ctx, key, request_hash(payload), saga_id)
    try:
        await engine.start_saga(client, ctx.settings, t, saga_input, saga_id=saga_id)
    except Exception:
        if claimed:
            # Nothing started: free the key so a corrected retry may use it.
            await release_idempotency_key(ctx, key)
        raise
    try:
        token = await saga_started_token(
            ctx.store,
            saga_id=saga_id,
            saga_type=t.name,
            keys=input_keys(t.definition, saga_input),
            order_id=getattr(saga_input, "order_id", None),
            user_id=user_id,
        )
    except Refused:
        if claimed:
            # The id belongs to another request's saga: free the key for a retry.
            await release_idempotency_key(ctx, key)
        raise
    return SagaAccepted(saga_id, t.name, token)


def parse_key(key: str | None) -> tuple[str, str] | None:
    """``Name:value`` as a pair (InvalidInput when there is no colon)."""
    if not key:
        return None
    name, sep, value = key.partition(":")
    if not sep or not name:
        raise InvalidInput([("key", "expected Name:value, e.g. CustomerId:c-1")])
    return name, value


async def list_sagas(
    ctx: Context,
    *,
    saga_type: str | None = None,
    status: str | None = None,
    key: str | None = None,
    page: int = 1,
    page_size: int = 50,
) -> dict[str, Any]:
    """One page of the saga read model, most recently changed first."""
    rows = await queries.list_saga_outcomes(
        ctx.pool,
        saga_type=saga_type,
        status=status,
        key=parse_key(key),
        limit=page_size + 1,
        offset=(page - 1) * page_size,
    )
    return {
        "page": page,
        "page_size": page_size,
        "has_more": len(rows) > page_size,
        "items": [r.model_dump(mode="json") for r in rows[:page_size]],
    }


async def show(ctx: Context, saga_id: str) -> dict[str, Any]:
    """The read-model row plus the live status query when Temporal answers.

    ``source`` says which answered: ``read_model+live``, ``read_model`` (Temporal
    away or the run gone from its retention), or ``live`` (not projected yet).
    """
    row = await queries.get_saga_outcome(ctx.pool, saga_id)
    live: dict[str, Any] | None = None
    if ctx.temporal is not None:
        try:
            live = dataclasses.asdict(await engine.saga_status(ctx.temporal, saga_id))
        except (engine.SagaNotFound, engine.SagaRequestRefused):
            live = None
        except Exception:  # Temporal away: the read model still answers
            live = None
    if row is None and live is None:
        raise NotFound("saga", saga_id)
    source = "+".join(s for s, v in (("read_model", row), ("live", live)) if v is not None)
    return {
        "saga_id": saga_id,
        "source": source,
        "saga": row.model_dump(mode="json") if row else None,
        "live": live,
    }


async def _engine(saga_id: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except engine.SagaNotFound:
        raise NotFound("saga", saga_id) from None
    except engine.SagaRequestRefused as exc:
        raise Refused(str(exc)) from None


async def plan(ctx: Context, saga_id: str) -> dict[str, Any]:
    """The plan query: the compensation a cancel or failure would run now."""
    result = await _engine(saga_id, engine.saga_plan(ctx.require_temporal(), saga_id))
    return dataclasses.asdict(result)


async def events(ctx: Context, saga_id: str) -> list[dict[str, Any]]:
    """The saga's journal (stream ``saga-<id>``) with envelopes, oldest first."""
    recorded = await ctx.store.read_stream(saga_stream(saga_id))
    if not recorded:
        raise NotFound("saga", saga_id)
    return [e.envelope() for e in recorded]


async def cancel(ctx: Context, saga_id: str, reason: str) -> dict[str, str]:
    """Cancel a saga of any type: it compensates (refused once past its pivot)."""
    client = ctx.require_temporal()
    result = await _engine(saga_id, engine.cancel_saga(client, saga_id, reason))
    return {"saga_id": saga_id, "result": result}


async def decide(
    ctx: Context,
    saga_id: str,
    step: str,
    decision: engine.Decision,
    *,
    note: str = "",
    operator: str = "",
) -> dict[str, str]:
    """Retry, resolve or skip a parked step, recorded with who (``operator``) and why.

    A step that is not parked is refused by the engine's validator (409 naming the
    parked steps) before anything is written.
    """
    client = ctx.require_temporal()
    call = engine.decide_compensation(client, saga_id, step, decision, note=note, operator=operator)
    return {"saga_id": saga_id, "result": await _engine(saga_id, call)}


async def inbox(
    ctx: Context, *, saga_type: str | None = None, step: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Every parked step of every saga type, longest waiting first, with its wait."""
    rows = await queries.parked_inbox(ctx.pool, saga_type=saga_type, step=step, limit=limit)
    return [r.model_dump(mode="json") for r in rows]


async def retry_parked(
    ctx: Context,
    *,
    saga_type: str | None = None,
    step: str | None = None,
    note: str = "",
    operator: str = "",
    limit: int = 1000,
) -> dict[str, Any]:
    """Retry every parked step (optionally of one type and step), e.g. after an outage.

    Each retry is one update; a refusal (already decided meanwhile, the read model a
    little behind) is reported per step, never fatal to the others.
    """
    client = ctx.require_temporal()
    entries = await queries.parked_inbox(ctx.pool, saga_type=saga_type, step=step, limit=limit)
    gate = asyncio.Semaphore(BULK_RETRY_CONCURRENCY)

    async def one(entry: queries.InboxEntry) -> dict[str, str]:
        async with gate:
            outcome = {"saga_id": entry.saga_id, "step": entry.step}
            try:
                result = await engine.decide_compensation(
                    client, entry.saga_id, entry.step, "retry", note=note, operator=operator
                )
            except (engine.SagaNotFound, engine.SagaRequestRefused) as exc:
                return {**outcome, "result": "refused", "detail": str(exc)}
            return {**outcome, "result": result}

    results = await asyncio.gather(*(one(e) for e in entries))
    return {"retried": len(results), "results": list(results)}
