"""The matrix for people: a progress bar while it runs, a table when it is done."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagaflow.testing.runner import MatrixRunner, SagaKit, ScenarioReport, start_test_server


async def run_with_progress(
    kit: SagaKit, only: str = "", *, quiet: bool = False
) -> list[ScenarioReport]:
    """Run the kit's matrix (scenarios whose id contains ``only``) with a progress
    bar on stderr (none when ``quiet``)."""
    env = await start_test_server(quiet=True)
    try:
        runner = MatrixRunner(kit, env)
        scenarios = [s for s in runner.scenarios() if only in s.id]
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=quiet,
            transient=True,
        )
        with progress:
            task = progress.add_task(kit.name or kit.saga_type, total=len(scenarios))
            failed = 0

            def advance(report: ScenarioReport) -> None:
                nonlocal failed
                failed += not report.passed
                label = (
                    f"{kit.name or kit.saga_type} ({failed} failed)"
                    if failed
                    else report.scenario.id
                )
                progress.update(task, advance=1, description=label)

            return await runner.run(scenarios, advance)
    finally:
        await env.shutdown()


def print_matrix(reports: list[ScenarioReport], console: Console) -> None:
    """The matrix as a table, then one line of totals."""
    table = Table(show_lines=False)
    for column in ("scenario", "expected", "observed", "invariants", "s", "result"):
        table.add_column(column, no_wrap=column != "result")
    for report in reports:
        verdict = "[green]ok[/]" if report.passed else f"[red]FAIL[/] {report.failures[0]}"
        table.add_row(
            report.scenario.id,
            report.expected,
            report.observed,
            f"{report.held}/{report.invariants}",
            f"{report.seconds:.1f}",
            verdict,
        )
    console.print(table)
    failed = [r for r in reports if not r.passed]
    total = sum(r.seconds for r in reports)
    console.print(
        f"{len(reports) - len(failed)} of {len(reports)} scenarios passed in {total:.1f} s"
        + (f"; failed: {', '.join(r.scenario.id for r in failed)}" if failed else ""),
        highlight=False,
    )
