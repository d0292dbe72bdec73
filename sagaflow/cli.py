"""The ``sagaflow`` command line: one place where people start and steer the processes.

Errors a person can fix (a taken port, a missing Java, a bad setting) print one line
and exit with status 2; nothing is left running.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sagaflow.services import SERVICE_NAMES, LocalServices, ServiceError, process_settings
from sagaflow.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="sagaflow: durable sagas, an event store, projections.", no_args_is_help=True
)
services_app = typer.Typer(help="Local PostgreSQL, Temporal and Kafka.", no_args_is_help=True)
app.add_typer(services_app, name="services")

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """An error shown to the user as one line, without a traceback."""


def friendly_errors(func: F) -> F:
    """Turn the errors a user can fix into one-line messages and exit status 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ServiceError, SettingsError, CliError) as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    return load_settings()


def _parse_names(names: list[str] | None) -> list[str] | None:
    if not names:
        return None
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown:
        raise CliError(f"unknown service {', '.join(unknown)}; known: {', '.join(SERVICE_NAMES)}")
    return names


def _print_addresses(services: LocalServices) -> None:
    table = Table(title="sagaflow services")
    table.add_column("service")
    table.add_column("pid", justify="right")
    table.add_column("address", overflow="fold")
    for name, info in services.running.items():
        table.add_row(
            name, str(info.pid), "\n".join(f"{k}: {v}" for k, v in info.addresses.items())
        )
    console.print(table)


NamesArg = Annotated[list[str] | None, typer.Argument(help="postgres, temporal, kafka")]


@services_app.command("up")
@friendly_errors
def services_up(names: NamesArg = None) -> None:
    """Start the local services in the background and print their addresses."""
    services = LocalServices(_settings(), detached=True)
    started = time.monotonic()
    services.start(_parse_names(names))
    _print_addresses(services)
    console.print(f"ready in {time.monotonic() - started:.1f}s; stop with 'sagaflow services down'")


@services_app.command("down")
@friendly_errors
def services_down() -> None:
    """Stop the local services started with 'services up'."""
    services = LocalServices(_settings())
    known = services.read_state()
    services.stop()
    console.print(f"stopped: {', '.join(known) or 'nothing was running'}")


@services_app.command("status")
@friendly_errors
def services_status() -> None:
    """Show each local service: process alive, answering, address."""
    services = LocalServices(_settings())
    report = services.status()
    if not report:
        console.print("no local services recorded; start them with 'sagaflow services up'")
        raise typer.Exit(1)
    table = Table(title="sagaflow services")
    for column in ("service", "pid", "process", "ready"):
        table.add_column(column)
    table.add_column("address", overflow="fold")
    for name, (info, alive, ready) in report.items():
        table.add_row(
            name,
            str(info.pid),
            "[green]up[/green]" if alive else "[red]down[/red]",
            "[green]yes[/green]" if ready else "[red]no[/red]",
            "\n".join(f"{k}: {v}" for k, v in info.addresses.items()),
        )
    console.print(table)
    if not all(ready for _, _, ready in report.values()):
        raise typer.Exit(1)


@services_app.command("install-kafka")
@friendly_errors
def services_install_kafka() -> None:
    """Fetch the Kafka broker's jars from Maven Central (needs Maven and Java)."""
    from sagaflow.services.kafka import install_jars

    console.print(f"Kafka jars in {install_jars(_settings())}")


@app.command("settings")
@friendly_errors
def show_settings() -> None:
    """Print every setting with its variable name and current value (secrets hidden)."""
    settings = _settings()
    table = Table(title="sagaflow settings")
    table.add_column("variable")
    table.add_column("value", overflow="fold")
    table.add_column("meaning", overflow="fold")
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        table.add_row(f"SAGAFLOW_{name.upper()}", str(value), field.description or "")
    console.print(table)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command("dev")
@friendly_errors
def dev(
    workers: Annotated[
        int, typer.Option(min=1, max=16, help="worker processes on the one task queue")
    ] = 1,
    projectors: Annotated[
        int,
        typer.Option(min=1, max=16, help="projector processes sharing the partitions or shards"),
    ] = 1,
) -> None:
    """The main job: local services, worker, relay, projector and API; Ctrl-C stops all."""
    from sagaflow.codec import keyring_of
    from sagaflow.stack import Stack

    settings = _settings()
    stack = Stack(settings, workers=workers, projectors=projectors)
    started = time.monotonic()
    try:
        stack.start()
        assert stack.services is not None
        _print_addresses(stack.services)
        for note in stack.notes:
            console.print(f"[yellow]note:[/yellow] {note}")
        temporal = stack.services.running.get("temporal")
        console.print(f"API docs:        {stack.api_url}/docs")
        console.print(f"Console:         {stack.api_url}/console")
        if temporal:
            console.print(f"Temporal Web UI: {temporal.addresses['ui']}")
        if stack.settings.codec_enabled:
            keyring = keyring_of(stack.settings)
            assert keyring is not None
            console.print(
                f"Payloads encrypted (key {keyring.current!r}); codec: {stack.api_url}/codec"
            )
        console.print(f"API key (development only): {settings.dev_api_key.get_secret_value()}")
        console.print(f"processes: {', '.join(stack.procs)}")
        console.print(f"logs: {stack.log_dir()}")
        console.print(f"ready in {time.monotonic() - started:.1f}s; Ctrl-C stops everything")
        wait_for_interrupt()
    finally:
        stack.stop()
    console.print("stopped")


@app.command("api")
@friendly_errors
def api_command(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.main import create_app

    settings = process_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port if port is not None else settings.api_port,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


@app.command("demo")
@friendly_errors
def demo_command(
    orders: Annotated[int, typer.Option(min=1, max=100_000, help="orders to place")] = 20,
    decline_rate: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="payment declines (default 0.1); not with --api"),
    ] = None,
    transient_rate: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="transient payment errors (default 0.1); not with --api"),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256)] = 8,
    api: Annotated[
        str | None, typer.Option(help="use a running API instead of starting a stack")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Seed products, run N orders through the API, print outcomes and latencies."""
    from sagaflow.demo import print_summary, run_demo
    from sagaflow.stack import Stack

    settings = _settings()
    if api and (decline_rate is not None or transient_rate is not None):
        # Why refuse: the rates configure the payment simulator of the worker the demo
        # starts; a running stack's worker has its own, which the demo cannot change.
        raise CliError(
            "--decline-rate and --transient-rate set the payment simulator of the stack "
            "the demo starts; with --api the running worker's own settings apply "
            "(SAGAFLOW_PAYMENT_DECLINE_RATE, SAGAFLOW_PAYMENT_TRANSIENT_ERROR_RATE): "
            "drop the rates, or run the demo without --api"
        )
    if api:
        summary = run_demo(api, settings.dev_api_key.get_secret_value(), orders, concurrency)
    else:
        stack = Stack(
            settings,
            extra_env={
                "SAGAFLOW_PAYMENT_DECLINE_RATE": str(0.1 if decline_rate is None else decline_rate),
                "SAGAFLOW_PAYMENT_TRANSIENT_ERROR_RATE": str(
                    0.1 if transient_rate is None else transient_rate
                ),
            },
        )
        try:
            stack.start()
            summary = run_demo(
                stack.api_url, settings.dev_api_key.get_secret_value(), orders, concurrency
            )
        finally:
            stack.stop()
    print_summary(summary, console, as_json=json_out)


def _mount(sub: typer.Typer) -> None:
    """Add a component's commands and groups to the main CLI."""
    app.registered_commands.extend(sub.registered_commands)
    app.registered_groups.extend(sub.registered_groups)


def _mount_components() -> None:
    from projections.cli import app as projections_cli
    from sagaflow.cli_ops import app as ops_cli
    from sagaflow.cli_saga import app as saga_cli
    from streaming.cli import app as streaming_cli

    for sub in (saga_cli, streaming_cli, projections_cli, ops_cli):
        _mount(sub)


_mount_components()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
