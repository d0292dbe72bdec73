"""Operator commands: the catalogue, steering sagas, dead letters.

Each command calls the same use case as its API route (``application/``); a
refusal is one line on stderr and exit status 1, a missing setting exit status 2.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from application import ApplicationError, Context
from domain.errors import DomainError
from sagaflow.settings import SettingsError

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True)
products_app = typer.Typer(help="The product catalogue.", no_args_is_help=True)
orders_app = typer.Typer(help="Steer an order's saga.", no_args_is_help=True)
sagas_app = typer.Typer(help="Sagas of every type and their parked steps.", no_args_is_help=True)
dead_letters_app = typer.Typer(help="Messages that kept failing.", no_args_is_help=True)
app.add_typer(products_app, name="products")
app.add_typer(orders_app, name="orders")
app.add_typer(sagas_app, name="sagas")
app.add_typer(dead_letters_app, name="dead-letters")

console = Console()
err_console = Console(stderr=True)


def _run(work: Callable[[Context], Awaitable[T]], *, temporal: bool = False) -> T:
    """Build the use cases' context (store, and Temporal when needed), run ``work``."""
    from eventstore.postgres import PostgresEventStore
    from sagaflow.clients import connect_temporal
    from sagaflow.services import process_settings

    async def main() -> T:
        settings = process_settings()
        assert settings.database_url
        store = await PostgresEventStore.connect(settings.database_url, max_size=2)
        try:
            client = await connect_temporal(settings) if temporal else None
            return await work(Context(settings, store, client))
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except SettingsError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (ApplicationError, DomainError) as exc:
        err_console.print(f"refused: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        err_console.print(f"invalid: {problems}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _show(row: dict[str, Any]) -> None:
    console.print(", ".join(f"{k}={v}" for k, v in row.items()), highlight=False, soft_wrap=True)


@products_app.command("register")
def products_register(sku: str, name: str, unit_price_cents: int) -> None:
    """Add a SKU to the catalogue with its name and unit price."""
    from application import catalogue
    from domain.commands import RegisterProduct

    async def work(ctx: Context) -> catalogue.Product:
        cmd = RegisterProduct(sku=sku, name=name, unit_price_cents=unit_price_cents)
        return await catalogue.register_product(ctx.store, cmd, user_id="cli")

    _show(dataclasses.asdict(_run(work)))


@products_app.command("restock")
def products_restock(
    sku: str,
    quantity: int,
    idempotency_key: Annotated[
        str | None, typer.Option(help="the same key again adds the units once")
    ] = None,
) -> None:
    """Add units of a SKU."""
    from application import catalogue
    from domain.commands import Restock

    async def work(ctx: Context) -> catalogue.Product:
        cmd = Restock(sku=sku, quantity=quantity)
        return await catalogue.restock(
            ctx.store, cmd, idempotency_key=idempotency_key, user_id="cli"
        )

    _show(dataclasses.asdict(_run(work)))


@orders_app.command("cancel")
def orders_cancel(
    order_id: str, reason: Annotated[str, typer.Option()] = "cancelled by an operator"
) -> None:
    """Cancel an order before it ships (its saga compensates)."""
    from application import orders

    _show(_run(lambda ctx: orders.cancel_order(ctx, order_id, reason), temporal=True))


def _operator() -> str:
    """Who to record for a CLI decision: the OS user (``cli:<name>``)."""
    import getpass

    return "cli:" + getpass.getuser()


def _decide(saga_id: str, step: str, decision: Any, note: str) -> None:
    from application import sagas

    _show(
        _run(
            lambda ctx: sagas.decide(ctx, saga_id, step, decision, note=note, operator=_operator()),
            temporal=True,
        )
    )


@sagas_app.command("list")
def sagas_list(
    saga_type: Annotated[str | None, typer.Option("--type")] = None,
    status: Annotated[str | None, typer.Option()] = None,
    key: Annotated[str | None, typer.Option(help="Name:value")] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Sagas from the read model, most recently changed first."""
    from application import sagas

    listing = _run(
        lambda ctx: sagas.list_sagas(ctx, saga_type=saga_type, status=status, key=key, page=page)
    )
    for row in listing["items"]:
        _show({k: row[k] for k in ("saga_id", "saga_type", "status", "current_step", "keys")})


@sagas_app.command("show")
def sagas_show(saga_id: str) -> None:
    """One saga: the read model, and its live status when Temporal answers."""
    from application import sagas

    _show(_run(lambda ctx: sagas.show(ctx, saga_id), temporal=True))


@sagas_app.command("plan")
def sagas_plan(saga_id: str) -> None:
    """The compensation a cancel or failure would run now."""
    from application import sagas

    _show(_run(lambda ctx: sagas.plan(ctx, saga_id), temporal=True))


@sagas_app.command("retry")
@sagas_app.command("retry-compensation", hidden=True)
def sagas_retry(saga_id: str, step: str, note: Annotated[str, typer.Option()] = "") -> None:
    """Retry a parked step now."""
    _decide(saga_id, step, "retry", note)


@sagas_app.command("resolve")
def sagas_resolve(
    saga_id: str, step: str, note: Annotated[str, typer.Option(help="how it was resolved")]
) -> None:
    """Mark a parked compensation as done by hand."""
    _decide(saga_id, step, "resolve", note)


@sagas_app.command("skip")
def sagas_skip(
    saga_id: str, step: str, note: Annotated[str, typer.Option(help="why it is given up")]
) -> None:
    """Give a parked step up (a known loss, recorded with the note)."""
    _decide(saga_id, step, "skip", note)


@sagas_app.command("retry-parked")
def sagas_retry_parked(
    saga_type: Annotated[str | None, typer.Option("--type")] = None,
    step: Annotated[str | None, typer.Option()] = None,
    note: Annotated[str, typer.Option()] = "",
) -> None:
    """Retry every parked step (optionally of one type and step), e.g. after an outage."""
    from application import sagas

    done = _run(
        lambda ctx: sagas.retry_parked(
            ctx, saga_type=saga_type, step=step, note=note, operator=_operator()
        ),
        temporal=True,
    )
    for row in done["results"]:
        _show(row)
    console.print(f"retried {done['retried']}", highlight=False)


@dead_letters_app.command("list")
def dead_letters_list(
    all_: Annotated[bool, typer.Option("--all", help="include resolved ones")] = False,
) -> None:
    """Show dead letters (open ones unless --all)."""
    from application import operations

    letters = _run(lambda ctx: operations.dead_letters(ctx, None if all_ else "open"))
    table = Table("id", "status", "position", "stream", "handler", "attempts", "parked", "error")
    for d in letters:
        table.add_row(
            str(d["id"]),
            d["status"],
            d["position"],
            f"{d['stream_id']} v{d['version']}",
            d["handler"],
            str(d["attempts"]),
            str(d["parked"]),
            d["error"],
        )
    console.print(table)


def _resolve(kind: str, dead_letter_id: int) -> None:
    from application import operations

    action = operations.replay_dead_letter if kind == "replay" else operations.skip_dead_letter
    result = _run(lambda ctx: action(ctx, dead_letter_id))
    console.print(
        f"dead letter {result.dead_letter_id} {result.status}; released {result.released} "
        f"parked message(s)"
        + (
            f"; a parked message failed and became a dead letter: {result.new_dead_letter}"
            if result.new_dead_letter
            else ""
        )
    )


@dead_letters_app.command("replay")
def dead_letters_replay(dead_letter_id: int) -> None:
    """Apply a dead letter again (after a fix), then its stream's parked messages."""
    _resolve("replay", dead_letter_id)


@dead_letters_app.command("skip")
def dead_letters_skip(dead_letter_id: int) -> None:
    """Give up on a dead letter and release its stream's parked messages."""
    _resolve("skip", dead_letter_id)
