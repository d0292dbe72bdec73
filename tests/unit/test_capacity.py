"""The capacity model's arithmetic (bench.capacity): instances, ceilings, inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import capacity as c


def test_workers_scale_with_the_rate_and_the_relay_reaches_its_ceiling_first() -> None:
    figures = dict(c.TODAY)
    figures["stack.worker.cpu_ms_per_order"] = 70.0
    slow = {n.component: n for n in c.plan(100, figures)}
    fast = {n.component: n for n in c.plan(10_000, figures)}
    # 7 cores of workflow work at 70 % of a core each
    assert slow["worker processes"].cores == pytest.approx(7.0)
    assert slow["worker processes"].instances == 10
    assert c.over_ceiling(list(slow.values())) == []
    # 100,000 events/s is past one relay's measured rate (at 70 %)
    worst = c.over_ceiling(list(fast.values()))
    assert worst[0].component == "relay (one active)"
    assert worst[0].ceiling_used == pytest.approx(100_000 / (42_751 * 0.7), rel=1e-3)
    assert fast["projectors"].instances == 6


def test_a_benchmark_s_result_line_overrides_today_s_figures(tmp_path: Path) -> None:
    out = tmp_path / "stack.txt"
    out.write_text('table...\nRESULT {"kafka.stack.worker.cpu_ms_per_order": 30.5, "other": 1}\n')
    f = c.figures(c.read_result(out), None)
    assert f["stack.worker.cpu_ms_per_order"] == 30.5
    assert f["stack.temporal.cpu_ms_per_order"] == c.TODAY["stack.temporal.cpu_ms_per_order"]


def test_a_file_without_a_result_line_is_refused_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "empty.txt"
    out.write_text("no figures here\n")
    with pytest.raises(SystemExit, match="no 'RESULT"):
        c.read_result(out)
