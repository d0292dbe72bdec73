"""Benchmark: how long the failure matrix of every saga type takes.

    python -m bench.kit [--repeats 3] [--types order,returns,trip]

Runs each type's whole matrix on one time-skipping test server, ``--repeats``
times, and prints per type the number of scenarios, how many passed, the wall time
(median and spread) and the CPU seconds of this process (the worker, the driver and
the activities all run here; the test server's own CPU is read from /proc too).
Last line ``RESULT {json}`` with ``<type>.scenarios``, ``<type>.seconds`` and
``total.seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
from pathlib import Path

from sagaflow.testing import MatrixRunner, start_test_server
from sagaflow.testing.kits import kit_for


def _cpu_s(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _server_pids() -> list[int]:
    """This process's time-skipping servers (its children), not other runs' ones."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if b"temporal-test-server" in cmd and int(stat[1]) == os.getpid():
                found.append(int(entry.name))
    return found


async def _one(name: str) -> tuple[int, int, float, float]:
    env = await start_test_server(quiet=True)
    servers = _server_pids()
    try:
        runner = MatrixRunner(kit_for(name), env)
        cpu0 = _cpu_s(os.getpid()) + sum(_cpu_s(p) for p in servers)
        t0 = time.monotonic()
        reports = await runner.run()
        wall = time.monotonic() - t0
        cpu = _cpu_s(os.getpid()) + sum(_cpu_s(p) for p in servers) - cpu0
    finally:
        await env.shutdown()
    return len(reports), sum(r.passed for r in reports), wall, cpu


async def main(types: list[str], repeats: int) -> None:
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    result: dict[str, float] = {}
    rows = []
    totals = [0.0] * repeats
    for name in types:
        walls, cpus = [], []
        count = passed = 0
        for i in range(repeats):
            count, passed, wall, cpu = await _one(name)
            walls.append(wall)
            cpus.append(cpu)
            totals[i] += wall
            print(
                f"  {name} run {i + 1}: {count} scenarios, {passed} passed, "
                f"{wall:.1f} s, cpu {cpu:.1f} s, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        med = statistics.median(walls)
        rows.append((name, count, passed, med, max(walls) - min(walls), statistics.median(cpus)))
        result[f"{name}.scenarios"] = count
        result[f"{name}.seconds"] = round(med, 2)
    print(
        f"\n{'type':<10}{'scenarios':>10}{'passed':>8}{'median s':>10}{'spread s':>10}{'cpu s':>8}"
    )
    for name, count, passed, med, spread, cpu in rows:
        print(f"{name:<10}{count:>10}{passed:>8}{med:>10.1f}{spread:>10.1f}{cpu:>8.1f}")
    total = statistics.median(totals)
    print(
        f"{'total':<10}{sum(r[1] for r in rows):>10}{sum(r[2] for r in rows):>8}"
        f"{total:>10.1f}{max(totals) - min(totals):>10.1f}"
    )
    result["total.seconds"] = round(total, 2)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--types", default="order,returns,trip")
    args = parser.parse_args()
    asyncio.run(main(args.types.split(","), args.repeats))
