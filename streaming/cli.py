"""``sagaflow relay`` and ``sagaflow subscribe`` from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from rich.console import Console

from sagaflow.settings import Settings, SettingsError, Transport
from streaming.lease import LeaseRefused
from streaming.relay import RETRYABLE, run_relay
from streaming.transport import TransportRefused, refused

app = typer.Typer(help="Relay the event store's feed to the transport.", no_args_is_help=True)
err_console = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Relay the event store's feed (keeps ``relay`` a sub-command when mounted)."""


def _run(work: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Load settings, run ``work`` until SIGINT/SIGTERM; fixable errors are one line, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        from sagaflow.services import process_settings

        settings = process_settings()
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await work(settings, stop)

    try:
        asyncio.run(main())
    except (SettingsError, ValueError, TransportRefused, LeaseRefused) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("relay")
def relay_command() -> None:
    """Follow the event store's feed from its checkpoint and publish it to the transport.

    Several may run: the one holding the destination's lease publishes, the others
    stand by and take over when it dies (SAGAFLOW_RELAY_ID names each in the log).
    """
    _run(lambda settings, stop: run_relay(settings, stop))


@app.command("subscribe")
def subscribe_command(
    pattern: Annotated[str, typer.Option(help="routing-key pattern, e.g. 'Order.*' or '#'")],
    queue: Annotated[str, typer.Option(help="the subscriber's own durable queue")],
    webhook: Annotated[
        str | None, typer.Option(help="POST each event here instead of printing it")
    ] = None,
) -> None:
    """Follow sagaflow's events on RabbitMQ: print each one, or POST it to a webhook."""
    from streaming.subscribe import print_sink, run_subscriber, webhook_sink

    async def work(settings: Settings, stop: asyncio.Event) -> None:
        if settings.transport_kind is not Transport.RABBITMQ:
            raise SettingsError(
                "sagaflow subscribe follows the RabbitMQ exchange: set SAGAFLOW_TRANSPORT=rabbitmq"
            )
        sink = webhook_sink(webhook) if webhook else print_sink()
        delay = 0.5
        while not stop.is_set():
            try:
                await run_subscriber(settings, pattern, queue, sink, stop)
            except RETRYABLE as exc:
                if (fatal := refused(exc)) is not None:
                    raise fatal from None
                # the broker went away: reconnect; unacknowledged events come again
                logging.getLogger("sagaflow.subscribe").warning(
                    "subscriber: %s (%s); reconnecting in %.1fs", type(exc).__name__, exc, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)

    _run(work)
