"""``sagaflow projector``, ``sagaflow projections rebuild NAME`` / ``list``.

(``sagaflow dead-letters`` lives with the other operator commands in ``sagaflow/cli_ops.py``.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from eventstore.postgres import PostgresEventStore
from projections.handlers import default_projections, projection_named
from projections.rebuild import RebuildError, rebuild
from projections.runner import run_projector
from sagaflow.settings import Settings, SettingsError
from streaming.transport import TransportRefused

app = typer.Typer(help="Read models: projector, rebuild.", no_args_is_help=True)
projections_app = typer.Typer(help="Read models.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def _settings() -> Settings:
    from sagaflow.services import process_settings

    try:
        return process_settings()
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _with_store(settings: Settings, work: Callable[[PostgresEventStore], Awaitable[T]]) -> T:
    async def main() -> T:
        assert settings.database_url
        store = await PostgresEventStore.connect(settings.database_url, max_size=4)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


@app.command("projector")
def projector_command() -> None:
    """Run the projector on SAGAFLOW_TRANSPORT (Kafka, RabbitMQ, or the store's feed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_projector(settings, stop)

    try:
        asyncio.run(main())
    except (SettingsError, TransportRefused) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@projections_app.command("list")
def list_command() -> None:
    """Name every read model and its tables."""
    table = Table("read model", "tables", "stream types")
    for p in default_projections():
        table.add_row(p.name, ", ".join(p.tables), ", ".join(sorted(p.stream_types)))
    console.print(table)


@projections_app.command("rebuild")
def rebuild_command(
    name: Annotated[str, typer.Argument(help="read model, e.g. order_summary")],
    batch_size: Annotated[int, typer.Option(min=1)] = 2000,
) -> None:
    """Rebuild a read model from the event store and swap it in atomically."""
    settings = _settings()
    try:
        projection = projection_named(name)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    async def work(store: PostgresEventStore) -> int:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(f"rebuilding {name}", total=None)
            return await rebuild(
                store,
                projection,
                batch_size=batch_size,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    try:
        count = _with_store(settings, work)
    except RebuildError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"rebuilt {name} from {count} events and swapped it in")
