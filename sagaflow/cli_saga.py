"""``sagaflow worker`` and ``sagaflow replay``: the saga's command-line commands.

Mounted into the main CLI. Addresses come from settings, or from the local
services started with ``sagaflow services up`` when settings name none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
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
    path: Annotated[Path, typer.Argument(help="a history exported as JSON, or a folder of them")],
) -> None:
    """Replay recorded histories against the current code; exit 1 on any mismatch.

    Each file: ``ok``, or the workflow id and the first event the code does not
    reproduce. A file that is not a Temporal history (or of an unregistered saga
    type) gets a one-line error; exit 2 if any could not be read.
    """
    from sagaflow.codec import data_converter
    from sagaflow.histories import HistoryFileError, replay_path

    try:
        # Why the settings' converter: encrypted histories (SAGAFLOW_CODEC_KEYS) only
        # replay with the keys that wrote them; plain ones replay either way.
        converter = data_converter(load_settings())
        outcomes = asyncio.run(replay_path(path, data_converter=converter))
    except SettingsError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except HistoryFileError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if not outcomes:
        err_console.print(
            f"error: {path}: no *.json histories there", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2)
    unreadable = mismatched = 0
    for outcome in outcomes:
        if not outcome.readable:
            unreadable += 1
            err_console.print(f"error: {outcome.error}", highlight=False, soft_wrap=True)
        elif outcome.ok:
            typer.echo(f"replay ok: {outcome.path}")
        else:
            mismatched += 1
            err_console.print(
                f"replay failed: {outcome.path} (workflow {outcome.workflow_id}): {outcome.error}",
                highlight=False,
                soft_wrap=True,
            )
    replayed = len(outcomes) - unreadable
    typer.echo(f"{replayed - mismatched} of {len(outcomes)} histories replay")
    if unreadable:
        raise typer.Exit(2)
    if mismatched:
        raise typer.Exit(1)


histories_app = typer.Typer(help="Histories of real runs, for the replay gate.")
app.add_typer(histories_app, name="histories")


@histories_app.command("export")
def histories_export_command(
    directory: Annotated[Path, typer.Argument(help="folder to write <workflow id>.json into")],
    query: Annotated[
        str,
        typer.Option(
            "--query",
            help="visibility query, e.g. \"WorkflowType='OrderSaga' AND "
            "ExecutionStatus='Completed'\"",
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, help="at most this many workflows")] = 1000,
) -> None:
    """Write the history of every workflow matching --query from the Temporal server
    (the format of ``temporal workflow show --output json``)."""
    from temporalio.service import RPCError

    from sagaflow.clients import connect_temporal
    from sagaflow.histories import export_histories

    async def run() -> list[Path]:
        settings = _resolved_settings()
        if not settings.temporal_address:
            raise SettingsError("SAGAFLOW_TEMPORAL_ADDRESS: not set (and no local services up)")
        client = await connect_temporal(settings)
        return await export_histories(client, query, directory, limit=limit)

    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = asyncio.run(run())
    except SettingsError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except RPCError as exc:
        err_console.print(
            f"error: Temporal refused: {exc.message}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from None
    except (OSError, RuntimeError) as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(written)} histories written to {directory}")


saga_app = typer.Typer(help="Saga types: test them with the failure matrix.")
app.add_typer(saga_app, name="saga")


@saga_app.command("test")
def saga_test_command(
    saga_type: Annotated[str, typer.Argument(help="order, returns, trip (or the type name)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the reports as JSON")] = False,
    only: Annotated[str, typer.Option(help="run only scenarios whose id contains this")] = "",
) -> None:
    """Run a saga type's failure matrix on the time-skipping test server; print the
    matrix (scenario, expected, observed, invariants held); exit 1 if any failed."""
    from sagaflow.testing.kits import kit_for
    from sagaflow.testing.report import print_matrix, run_with_progress
    from workflows.registry import UnknownSagaType

    # The SDK's warnings (the test server's version, each injected failure) are
    # the kit's own doing: keep the table readable.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    try:
        kit = kit_for(saga_type)
    except UnknownSagaType as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        reports = asyncio.run(run_with_progress(kit, only, quiet=as_json))
    except RuntimeError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print_matrix(reports, Console(width=None if sys.stdout.isatty() else 160))
    if not reports or any(not r.passed for r in reports):
        raise typer.Exit(1)
