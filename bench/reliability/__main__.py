"""Reliability report: every fault scenario against one dedicated stack.

    python -m bench.reliability [--quick] [--only NAME ...] [--data-dir DIR]
    python -m bench.reliability --soak SECONDS [--rate R] [--out DIR] [--data-dir DIR]

Starts PostgreSQL, Temporal, Kafka and sagaflow's processes (fixed PostgreSQL and
Temporal ports, so restarts keep addresses), runs the scenarios one after another
(``--quick``: a few dozen orders each; otherwise at least 1,000), prints a table
and, last, ``RESULT {json}`` with ``<scenario>.<figure>`` keys. ``kafka_leader_kill``
runs on a second stack whose Kafka is a three-broker cluster. ``--soak`` runs the
soak instead (``bench/reliability/soak.py``): a steady flow for SECONDS, sampled
every 10 s into ``soak.csv`` and ``soak.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

from bench.reliability.harness import (
    Harness,
    cluster_stack_for_reliability,
    stack_for_reliability,
    started,
)
from bench.reliability.scenarios import (
    LONG,
    ON_KAFKA_CLUSTER,
    ONLY_ON,
    QUICK,
    SCENARIOS,
    ScenarioResult,
    Sizes,
    scenarios_for,
)

COLUMNS = ("scenario", "orders", "terminal%", "events", "lost", "dup", "viol", "recovery_s")


def format_table(results: list[ScenarioResult]) -> str:
    """A fixed-width table, one row per scenario, violations listed below it."""
    rows = [COLUMNS] + [
        (
            r.name,
            str(r.orders),
            f"{r.terminal_pct:.1f}",
            str(r.events),
            str(r.lost),
            str(r.duplicated),
            str(len(r.violations)),
            "-" if r.recovery_s is None else f"{r.recovery_s:.1f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        lines.append(f"{r.name}: {json.dumps(r.notes, default=str)}")
        lines += [f"  ! {v}" for v in r.violations[:15]]
        if len(r.violations) > 15:
            lines.append(f"  ! ... {len(r.violations) - 15} more")
        lines += [f"  ? {d}" for d in r.diagnosis]
    return "\n".join(lines)


async def run_all(h: Harness, names: list[str], sizes: Sizes) -> list[ScenarioResult]:
    """Run the named scenarios in order; a scenario that crashes is reported, not fatal."""
    results = []
    for name in names:
        began = time.monotonic()
        try:
            result = await SCENARIOS[name](h, sizes)
        except Exception as exc:
            traceback.print_exc()
            result = ScenarioResult(name, violations=[f"scenario crashed: {exc!r}"])
        result.notes["wall_s"] = round(time.monotonic() - began, 1)
        print(f"[{name}] done in {result.notes['wall_s']} s", file=sys.stderr, flush=True)
        results.append(result)
    return results


def run_soak(seconds: float, rate: float, out: Path, data_dir: Path | None) -> int:
    """The soak on a stack of its own; prints the verdict; 1 when it failed."""
    from bench.reliability.soak import soak, write_outputs

    with tempfile.TemporaryDirectory(prefix="sagaflow-soak-") as tmp:
        stack = stack_for_reliability(data_dir or Path(tmp))
        with started(stack) as harness:
            result, report = asyncio.run(soak(harness, seconds, rate))
    write_outputs(report, out, seconds, rate)
    print(format_table([result]))
    last = report.samples[-1] if report.samples else None
    print(f"samples: {len(report.samples)} in {out / 'soak.csv'}; chart {out / 'soak.png'}")
    if last is not None:
        print("RSS at the end (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in last.rss_mb.items()))
    figures: dict[str, object] = dict(result.figures())
    figures |= {f"soak.rss_growth.{k}": v for k, v in report.growth.items()}
    figures["soak.max_lag_events"] = report.max_lag
    print("RESULT " + json.dumps(figures, separators=(",", ":")))
    failed = result.lost or result.duplicated or result.violations or result.recovery_s is None
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 1 when any target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.reliability")
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="these scenarios")
    parser.add_argument("--data-dir", type=Path, help="stack data folder (default: temporary)")
    parser.add_argument(
        "--transport",
        choices=("kafka", "rabbitmq"),
        default="kafka",
        help="the stack's broker (scenarios bound to the other one are left out)",
    )
    parser.add_argument("--orders", type=int, help="orders per scenario (default: by size)")
    parser.add_argument(
        "--rate", type=float, help="orders placed per second (default: by size; worker_kill ≤ 2)"
    )
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS", help="run the soak for SECONDS instead"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("soak"), help="where the soak's CSV and chart go"
    )
    args = parser.parse_args(argv)
    if args.soak is not None:
        if args.soak < 60:
            parser.error("--soak: at least 60 seconds (the verdict needs samples after warm-up)")
        return run_soak(args.soak, args.rate or LONG.rate_per_s or 3.0, args.out, args.data_dir)
    sizes = QUICK if args.quick else LONG
    if args.orders:
        sizes = replace(sizes, orders=args.orders)
    if args.rate:
        sizes = replace(sizes, rate_per_s=args.rate)
    names = args.only or scenarios_for(args.transport)
    wrong = [n for n in names if ONLY_ON.get(n, args.transport) != args.transport]
    if wrong:
        parser.error(
            ", ".join(f"{n} runs on {ONLY_ON[n].value} only" for n in wrong)
            + f" (the stack is on {args.transport}: pass --transport)"
        )
    # The cluster's scenarios get a stack of their own, after the others.
    on_cluster = [n for n in names if n in ON_KAFKA_CLUSTER]
    names = [n for n in names if n not in ON_KAFKA_CLUSTER]
    results: list[ScenarioResult] = []
    with tempfile.TemporaryDirectory(prefix="sagaflow-reliability-") as tmp:
        if names:
            stack = stack_for_reliability(args.data_dir or Path(tmp), transport=args.transport)
            with started(stack) as harness:
                results += asyncio.run(run_all(harness, names, sizes))
        if on_cluster:
            folder = (args.data_dir or Path(tmp)) / "kafka-cluster-stack"
            with started(cluster_stack_for_reliability(folder)) as harness:
                results += asyncio.run(run_all(harness, on_cluster, sizes))
    print(format_table(results))
    figures: dict[str, object] = {}
    for r in results:
        figures.update(r.figures())
    print("RESULT " + json.dumps(figures, separators=(",", ":")))
    missed = any(
        r.lost or r.duplicated or r.violations or r.terminal_pct < 100 or r.recovery_s is None
        for r in results
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
