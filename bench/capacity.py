"""A capacity model: what 100, 1,000 and 10,000 orders/s need, from measured costs.

    python -m bench.capacity [--stack FILE] [--streaming FILE] [--rates 100,1000,10000]

``--stack`` and ``--streaming`` are files holding the output of ``python -m bench.stack``
and ``python -m bench.streaming`` (their last ``RESULT {json}`` line is read). Without
them, the figures measured on the 2-core development machine (``TODAY``, with the run
they come from) are used. The model and its assumptions are in ``docs/capacity.md``.

For each rate it prints, per component, the CPU cores the work needs, the instances
that means, and how close the component comes to a ceiling that more instances
cannot lift (one active relay, one PostgreSQL primary, a fixed number of Temporal
history shards); the first component to reach its ceiling is the bottleneck, with the
design change that step needs. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Figures measured on this machine (2 cores; Kafka transport, tuned dev server):
#: ``bench.stack --quick`` (60 orders at concurrency 32) and ``bench.streaming --quick``,
#: both on 2026-12-02. Replace them with ``--stack`` / ``--streaming``.
TODAY: dict[str, float] = {
    "stack.api.cpu_ms_per_order": 4.5,
    "stack.worker.cpu_ms_per_order": 56.2,
    "stack.relay.cpu_ms_per_order": 2.3,
    "stack.projector.cpu_ms_per_order": 4.7,
    "stack.temporal.cpu_ms_per_order": 28.8,
    "stack.postgres.cpu_ms_per_order": 6.8,
    "stack.kafka.cpu_ms_per_order": 10.3,
    "kafka.relay.events_per_s": 42_751,
    "kafka.projector.events_per_s": 26_084,
    "kafka.relay.cpu_ms_per_1k": 12.0,
    "kafka.projector.cpu_ms_per_1k": 40.1,
}

#: Store events per settled order (saga journal included): 233 events for 24 orders in
#: the reliability suite's mix (15 % declined), products' own events excluded.
EVENTS_PER_ORDER = 10.0
#: Appending transactions per order (one per step's facts plus the journal's records).
APPENDS_PER_ORDER = 8.0
#: Temporal persistence writes per order, from the happy path's history (59 events):
#: 5 workflow tasks (scheduled/started/completed: ~2 writes each), 2 activities (~2
#: each), the start. Local activities (13 markers) ride on the workflow tasks.
TEMPORAL_WRITES_PER_ORDER = 15.0

#: The share of a core (or a ceiling) a component is planned to use: headroom for
#: bursts, failover (a dead worker's sagas move to the others) and garbage collection.
UTILISATION = 0.7
#: A Python process (worker, API, projector, relay) uses at most about one core.
CORES_PER_PROCESS = 1.0
#: Kafka: replication factor 3 costs the leader's write plus two followers' fetches.
KAFKA_REPLICATION = 3
CORES_PER_BROKER = 8.0
#: Planning budget per Temporal history shard (writes/s): an assumption to check with
#: Temporal's own load tests on the chosen persistence, not a measured figure here.
WRITES_PER_SHARD = 100.0
MIN_SHARDS = 512
#: Cores of one Temporal history node (frontend and matching are smaller, beside it).
CORES_PER_TEMPORAL_NODE = 4.0
#: One PostgreSQL primary: the event store's single writer (the feed is one order).
PRIMARY_CORES = 64.0


@dataclass
class Need:
    """What one component needs at one rate."""

    component: str
    cores: float
    instances: int
    #: the fraction of the component's fixed ceiling used (None: it scales out freely)
    ceiling_used: float | None
    note: str

    def row(self) -> str:
        """One line of the table."""
        used = "-" if self.ceiling_used is None else f"{self.ceiling_used:.0%}"
        return f"  {self.component:<22}{self.cores:>9.1f}{self.instances:>11}{used:>9}  {self.note}"


def read_result(path: Path) -> dict[str, Any]:
    """The last ``RESULT {json}`` of a benchmark's output."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{path}: no 'RESULT {{json}}' line (is it a benchmark's output?)")
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def figures(stack: dict[str, Any] | None, streaming: dict[str, Any] | None) -> dict[str, float]:
    """TODAY, overridden by what the given benchmark outputs hold."""
    out = dict(TODAY)
    for source in (stack, streaming):
        for key, value in (source or {}).items():
            bare = key.removeprefix("kafka.") if key.startswith("kafka.stack.") else key
            if bare in out and isinstance(value, int | float):
                out[bare] = float(value)
    return out


def _processes(cores: float) -> int:
    return max(1, math.ceil(cores / (CORES_PER_PROCESS * UTILISATION)))


def plan(rate: float, f: dict[str, float]) -> list[Need]:
    """Every component's need at ``rate`` orders/s."""

    events = rate * EVENTS_PER_ORDER

    def cores(name: str) -> float:
        if name in ("relay", "projector"):
            # Why the streaming benchmark's figure: at these rates the relay and the
            # projector work in full batches; the stack's per-order figure, taken at
            # ~11 orders/s, is mostly their idle polling.
            return f[f"kafka.{name}.cpu_ms_per_1k"] * events / 1e6
        return f[f"stack.{name}.cpu_ms_per_order"] * rate / 1000

    relay_ceiling = f["kafka.relay.events_per_s"] * UTILISATION
    projector_each = f["kafka.projector.events_per_s"] * UTILISATION
    projectors = max(1, math.ceil(events / projector_each))
    broker_cores = cores("kafka") * KAFKA_REPLICATION
    writes = rate * TEMPORAL_WRITES_PER_ORDER
    shards = max(MIN_SHARDS, 2 ** math.ceil(math.log2(max(1.0, writes / WRITES_PER_SHARD))))
    return [
        Need("worker processes", cores("worker"), _processes(cores("worker")), None,
             "one task queue; N processes share it"),
        Need("API processes", cores("api"), _processes(cores("api")), None,
             "stateless behind a load balancer"),
        Need("relay (one active)", cores("relay"), 1,
             max(events / relay_ceiling, cores("relay") / (CORES_PER_PROCESS * UTILISATION)),
             f"{events:,.0f} events/s to the broker; standbys wait on the lease"),
        Need("projectors", cores("projector"), projectors, None,
             f"{projectors} of a group, needs >= {projectors} partitions"),
        Need("Kafka brokers (RF 3)", broker_cores,
             max(3, math.ceil(broker_cores / (CORES_PER_BROKER * UTILISATION))), None,
             f"partitions >= {max(6, projectors)}"),
        Need("PostgreSQL primary", cores("postgres"), 1,
             cores("postgres") / (PRIMARY_CORES * UTILISATION),
             f"{events:,.0f} events/s, {rate * APPENDS_PER_ORDER:,.0f} appends/s, one feed"),
        Need("Temporal (history)", cores("temporal"),
             max(1, math.ceil(cores("temporal") / (CORES_PER_TEMPORAL_NODE * UTILISATION))),
             None, f"{writes:,.0f} persistence writes/s; {shards} shards"),
    ]  # fmt: skip


#: What each fixed ceiling needs when it is reached, by component.
DESIGN_CHANGE = {
    "relay (one active)": "partition the feed: relays per range of stream-id hash, each with "
    "its own lease and checkpoint (per-stream order holds; the global order does not)",
    "PostgreSQL primary": "partition the event store by stream (several primaries, one feed "
    "per partition), or a write-optimised store behind the same port",
}


def over_ceiling(needs: list[Need]) -> list[Need]:
    """The components past their fixed ceiling, the worst first."""
    fixed = [n for n in needs if n.ceiling_used is not None and n.ceiling_used >= 1.0]
    return sorted(fixed, key=lambda n: -(n.ceiling_used or 0.0))


def main() -> None:
    """Parse arguments, print the plan for every rate and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", type=Path, help="output of python -m bench.stack")
    parser.add_argument("--streaming", type=Path, help="output of python -m bench.streaming")
    parser.add_argument("--rates", default="100,1000,10000", help="orders/s, comma-separated")
    args = parser.parse_args()
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        raise SystemExit(
            f"--rates: {args.rates!r} is not a comma-separated list of numbers"
        ) from None
    f = figures(
        read_result(args.stack) if args.stack else None,
        read_result(args.streaming) if args.streaming else None,
    )
    per_order = sum(v for k, v in f.items() if k.startswith("stack."))
    # (the relay's and projector's share below comes from bench.streaming's batches)
    print(f"measured CPU per order: {per_order:.1f} ms (all processes); "
          f"{EVENTS_PER_ORDER:.0f} store events per order")  # fmt: skip
    result: dict[str, Any] = {"cpu_ms_per_order": round(per_order, 1)}
    for rate in rates:
        needs = plan(rate, f)
        print(f"\n{rate:,.0f} orders/s: {sum(n.cores for n in needs):,.0f} cores in all")
        print(f"  {'component':<22}{'cores':>9}{'instances':>11}{'ceiling':>9}")
        for need in needs:
            print(need.row())
        total = sum(n.cores for n in needs)
        largest = max(needs, key=lambda n: n.cores)
        past = over_ceiling(needs)
        key = f"{rate:g}"
        result[f"{key}.cores"] = round(total, 1)
        result[f"{key}.workers"] = needs[0].instances
        result[f"{key}.projectors"] = needs[3].instances
        result[f"{key}.bottleneck"] = past[0].component if past else largest.component
        print(f"  largest cost: {largest.component} ({largest.cores / total:.0%} of the cores)")
        for need in past:
            print(f"  past its ceiling: {need.component} at {need.ceiling_used:.0%}; "
                  f"{DESIGN_CHANGE.get(need.component, 'scale it out')}")  # fmt: skip
        if not past:
            closest = max((n for n in needs if n.ceiling_used is not None),
                          key=lambda n: n.ceiling_used or 0.0)  # fmt: skip
            print(f"  no fixed ceiling reached; closest: {closest.component} "
                  f"at {closest.ceiling_used:.0%}")  # fmt: skip
    print("RESULT " + json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
