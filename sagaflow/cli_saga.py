"""``sagaflow worker`` and ``sagaflow replay``: the saga's command-line commands.

Mounted into the main CLI. Addresses come from settings, or from the local
services started with ``sagaflow services up`` when settings name none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sagaflow.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="The order saga: run the worker, replay histories.", no_args_is_help=True)
err_console = Console(stderr=True)


def _resolved_settings() -> Settings:
    """Settings, with addresses filled in from running local services if unset."""
    from sagaflow.services import with_local_addresses

    return with_local_addresses(load_settings())


@app.command("worker")
def worker_command() -> None:
    """Run the worker of every saga type until SIGTERM or Ctrl-C (graceful shutdown)."""
    from worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(run_worker(_resolved_settings()))
    except SettingsError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    # Why exit here, after the graceful shutdown finished (polls stopped, activities
    # done, the store closed): tearing the interpreter down afterwards can race the
    # Temporal core runtime's threads, which then panic ("receive half not dropped")
    # and abort the process with SIGABRT although nothing was left to do.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command("replay")
def replay_command(
    history: Annotated[Path, typer.Argument(help="a workflow history exported as JSON")],
) -> None:
    """Replay a recorded history against the current workflow code; exit 1 on mismatch."""
    from workflows.replay import replay_history_file

    try:
        asyncio.run(replay_history_file(history))
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as exc:
        err_console.print(f"error: cannot read {history}: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        # The SDK wraps the reason ("[TMPRL1100] Nondeterminism error: ...") in a
        # Rust debug dump; show just the message.
        text = str(exc)
        found = re.search(r'message: "([^"]+)"', text)
        first_line = found.group(1) if found else (text.strip().splitlines() or [""])[0]
        err_console.print(
            f"replay failed: {history.name}: {first_line}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    typer.echo(f"replay ok: {history.name}")
