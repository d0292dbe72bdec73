"""The soak: a steady flow of orders for a long time, every process sampled.

    python -m bench.reliability --soak 3600 [--rate 2] [--data-dir DIR] [--out DIR]

Places orders at a steady rate with the reliability mix (15 % of charges declined,
transient provider errors, 10 % cancelled, 10 % shipped and half of those
delivered). Every ``SAMPLE_EVERY_S`` it samples:
- the resident memory of every sagaflow process, and the proportional set size
  (PSS) of every service's process tree;
- the relay's and projector's lag (events);
- the backlog (orders accepted but not settled);
- the throughput (orders settled per second since the last sample).

It writes them to ``soak.csv`` and charts them in ``soak.png``. At the end the
reliability oracle checks the run: nothing lost, nothing doubled, the invariants
held. It passes when, in addition:
- the RSS of every sagaflow process grew less than ``RSS_GROWTH_LIMIT`` from the end
  of the warm-up to the end (the median of 3 samples on each side);
- the lag stayed below ``LAG_BOUND_EVENTS`` after the warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from bench.reliability.harness import SETTLED, Harness
from bench.reliability.scenarios import LONG, Load, ScenarioResult, run_scenario
from projections.runner import projector_lag
from streaming.relay import relay_lag

SAMPLE_EVERY_S = 10.0
#: a process's resident memory may grow this much after the warm-up
RSS_GROWTH_LIMIT = 0.10
#: the relay's or the projector's lag must stay below this after the warm-up
LAG_BOUND_EVENTS = 2_000
#: the warm-up: the worker's workflow cache fills, pools open, the JIT-less caches settle
WARMUP_SHARE = 0.2
SAGAFLOW_PROCESSES = ("worker", "relay", "projector", "api")
SERVICES = ("postgres", "temporal", "kafka")


@dataclass
class Sample:
    """One row of the soak's CSV."""

    t_s: float
    rss_mb: dict[str, float]
    relay_lag: int
    projector_lag: int
    backlog: int
    settled_per_s: float


@dataclass
class SoakReport:
    """The samples and the verdict."""

    samples: list[Sample] = field(default_factory=list)
    growth: dict[str, float] = field(default_factory=dict)
    max_lag: int = 0
    problems: list[str] = field(default_factory=list)


def _rss_mb(pid: int, tree: bool) -> float:
    """Resident memory of a process, or the proportional set size summed over a
    service's process tree.

    Why PSS for a tree: PostgreSQL's backends share its buffers, and summed RSS
    counts those pages once per backend (2.2 GB in the first hour-long soak, which
    was not growth); PSS divides each shared page among the processes mapping it."""
    try:
        proc = psutil.Process(pid)
        if not tree:
            return proc.memory_info().rss / 2**20
        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_full_info().pss
        return total / 2**20
    except psutil.Error:
        return 0.0


def _pids(h: Harness) -> dict[str, tuple[int, bool]]:
    """The pid of every sagaflow process and service, and whether to count its tree."""
    out = {n: (p.pid, False) for n, p in h.stack.procs.items() if n in SAGAFLOW_PROCESSES}
    running = h.stack.services.running if h.stack.services else {}
    out |= {n: (running[n].pid, True) for n in SERVICES if n in running and running[n].pid}
    return out


async def sample_until_placed(h: Harness, load: Load, report: SoakReport, every_s: float) -> None:
    """Sample every ``every_s`` until every order is placed (and once more after)."""
    began = time.monotonic()
    last_settled, last_t = 0, began
    store = await h.store()
    try:
        while True:
            placed = load.placed.is_set()
            now = time.monotonic()
            settled = sum(1 for o in load.accepted if load.status.get(o) in SETTLED)
            try:
                relay = (await relay_lag(store, h.settings.relay_name)).events
                projector = (await projector_lag(store, h.settings)).events
            except Exception:  # a hiccup of the store: keep the sample, mark the lag unknown
                relay = projector = -1
            report.samples.append(
                Sample(
                    t_s=round(now - began, 1),
                    rss_mb={n: round(_rss_mb(pid, tree), 1) for n, (pid, tree) in _pids(h).items()},
                    relay_lag=relay,
                    projector_lag=projector,
                    backlog=len(load.accepted) - settled,
                    settled_per_s=round((settled - last_settled) / max(now - last_t, 1e-9), 2),
                )
            )
            last_settled, last_t = settled, now
            if placed:
                return
            # Wake at the next sample, or when the last order is placed.
            with_placed = asyncio.create_task(load.placed.wait())
            await asyncio.wait({with_placed}, timeout=every_s)
            with_placed.cancel()
    finally:
        await store.close()


def judge(report: SoakReport) -> None:
    """Fill ``growth``, ``max_lag`` and ``problems`` from the samples."""
    warm = int(len(report.samples) * WARMUP_SHARE)
    after = report.samples[warm:]
    if len(after) < 6:
        report.problems.append(f"only {len(after)} samples after the warm-up: run longer")
        return
    for name in SAGAFLOW_PROCESSES:
        first = statistics.median(s.rss_mb.get(name, 0.0) for s in after[:3])
        last = statistics.median(s.rss_mb.get(name, 0.0) for s in after[-3:])
        if first <= 0:
            continue
        report.growth[name] = round(last / first - 1, 4)
        if report.growth[name] >= RSS_GROWTH_LIMIT:
            report.problems.append(
                f"{name}: RSS grew {report.growth[name]:.1%} after the warm-up "
                f"({first:.0f} -> {last:.0f} MiB; limit {RSS_GROWTH_LIMIT:.0%})"
            )
    report.max_lag = max(max(s.relay_lag, s.projector_lag) for s in after)
    if report.max_lag >= LAG_BOUND_EVENTS:
        report.problems.append(
            f"lag reached {report.max_lag} events after the warm-up (bound {LAG_BOUND_EVENTS})"
        )
    unknown = sum(1 for s in after if s.relay_lag < 0)
    if unknown:
        report.problems.append(f"{unknown} samples could not read the lag")


def write_csv(report: SoakReport, path: Path) -> None:
    """One row per sample: time, lags, backlog, throughput, then RSS per process."""
    names = sorted({n for s in report.samples for n in s.rss_mb})
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            ["t_s", "relay_lag", "projector_lag", "backlog", "settled_per_s"]
            + [f"rss_mb_{n}" for n in names]
        )
        for s in report.samples:
            out.writerow(
                [s.t_s, s.relay_lag, s.projector_lag, s.backlog, s.settled_per_s]
                + [s.rss_mb.get(n, "") for n in names]
            )


def write_chart(report: SoakReport, path: Path, title: str) -> None:
    """Four panels over time: RSS per process, lag, backlog, throughput."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in report.samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    for name in sorted({n for s in report.samples for n in s.rss_mb}):
        axes[0].plot(t, [s.rss_mb.get(name, float("nan")) for s in report.samples], label=name)
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].legend(loc="upper left", fontsize="small", ncol=4)
    axes[1].plot(t, [s.relay_lag for s in report.samples], label="relay")
    axes[1].plot(t, [s.projector_lag for s in report.samples], label="projector")
    axes[1].axhline(LAG_BOUND_EVENTS, color="red", linestyle=":", label="bound")
    axes[1].set_ylabel("lag (events)")
    axes[1].legend(loc="upper left", fontsize="small")
    axes[2].plot(t, [s.backlog for s in report.samples])
    axes[2].set_ylabel("backlog (orders)")
    axes[3].plot(t, [s.settled_per_s for s in report.samples])
    axes[3].set_ylabel("settled / s")
    axes[3].set_xlabel("minutes")
    warm = report.samples[int(len(report.samples) * WARMUP_SHARE)].t_s / 60
    for ax in axes:
        ax.axvline(warm, color="grey", linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def soak(h: Harness, seconds: float, rate: float) -> tuple[ScenarioResult, SoakReport]:
    """Run the soak for ``seconds`` at ``rate`` orders/s and judge it."""
    sizes = replace(
        LONG,
        orders=max(1, int(seconds * rate)),
        rate_per_s=rate,
        concurrency=32,
        deliver_share=0.5,
    )
    report = SoakReport()

    async def fault(load: Load) -> dict[str, Any]:
        await sample_until_placed(h, load, report, SAMPLE_EVERY_S)
        return {"samples": len(report.samples)}

    result = await run_scenario(h, "soak", sizes, fault)
    judge(report)
    result.violations += report.problems
    result.notes |= {
        "rss_growth": report.growth,
        "max_lag_events": report.max_lag,
        "rate_per_s": rate,
        "seconds": seconds,
    }
    return result, report


def write_outputs(report: SoakReport, out_dir: Path, seconds: float, rate: float) -> None:
    """``soak.csv`` and ``soak.png`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(report, out_dir / "soak.csv")
    write_chart(
        report,
        out_dir / "soak.png",
        f"sagaflow soak: {int(seconds * rate)} orders at {rate:g}/s over {seconds / 60:.0f} min",
    )
