"""Start-up time and memory of the local services.

    python -m bench.services [--repeats N]

For each service alone and for all three together: the cold start (a fresh data
folder: initdb, storage format) and the warm start (the same folder again), each
repeated; then the resident memory of each running service's process tree. The
jars and wheels are already installed here; the first-run download time is what
``scripts/bootstrap`` prints (Maven fetches the Kafka jars once into ~/.m2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from sagaflow.services import SERVICE_NAMES, LocalServices
from sagaflow.settings import load_settings


def _timed_start(data_dir: Path, names: list[str]) -> tuple[float, LocalServices]:
    services = LocalServices(load_settings(data_dir=data_dir))
    started = time.perf_counter()
    services.start(names)
    return time.perf_counter() - started, services


def _rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    groups = {name: [name] for name in SERVICE_NAMES} | {"all three": list(SERVICE_NAMES)}
    figures: dict[str, float] = {}
    print(f"{'service':12} {'cold s (median, range)':>26} {'warm s (median, range)':>26}")
    for label, names in groups.items():
        cold, warm = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="sagaflow-svc-") as tmp:
                seconds, services = _timed_start(Path(tmp), names)
                cold.append(seconds)
                services.stop()
                seconds, services = _timed_start(Path(tmp), names)
                warm.append(seconds)
                services.stop()
        figures[f"{label}.cold_s"] = round(statistics.median(cold), 2)
        figures[f"{label}.warm_s"] = round(statistics.median(warm), 2)
        print(
            f"{label:12} {statistics.median(cold):>12.2f} ({min(cold):.2f}-{max(cold):.2f})"
            f"{statistics.median(warm):>16.2f} ({min(warm):.2f}-{max(warm):.2f})"
        )
    with tempfile.TemporaryDirectory(prefix="sagaflow-svc-") as tmp:
        _, services = _timed_start(Path(tmp), list(SERVICE_NAMES))
        time.sleep(3)  # let each settle after start-up
        for name, info in services.running.items():
            figures[f"{name}.rss_mb"] = round(_rss_mb(info.pid), 1)
            print(f"{name:12} resident memory {figures[f'{name}.rss_mb']:8.1f} MB")
        services.stop()
    print("RESULT " + json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
