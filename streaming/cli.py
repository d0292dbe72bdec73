"""``sagaflow relay``: the relay process from the command line."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from sagaflow.settings import load_settings
from streaming.relay import run_relay

app = typer.Typer(help="Relay the event store's feed to Kafka.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Relay the event store's feed to Kafka (keeps ``relay`` a sub-command when mounted)."""


@app.command("relay")
def relay_command() -> None:
    """Follow the event store's feed from its checkpoint and publish it to Kafka."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_relay(settings, stop)

    asyncio.run(main())
