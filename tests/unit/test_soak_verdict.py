"""The soak's verdict from its samples (bench.reliability.soak.judge)."""

from __future__ import annotations

from pathlib import Path

from bench.reliability.soak import LAG_BOUND_EVENTS, Sample, SoakReport, judge, write_csv


def _samples(worker_mb: list[float], lag: int = 0) -> list[Sample]:
    return [
        Sample(
            t_s=10.0 * i,
            rss_mb={"worker": mb, "relay": 100.0, "projector": 100.0, "api": 130.0},
            relay_lag=lag,
            projector_lag=lag,
            backlog=2,
            settled_per_s=3.0,
        )
        for i, mb in enumerate(worker_mb)
    ]


def test_flat_memory_after_the_warm_up_passes_even_if_the_warm_up_grew() -> None:
    # the warm-up (first 20 %) fills the workflow cache; after it memory is flat
    report = SoakReport(samples=_samples([100, 200, 300, 400] + [500.0] * 16))
    judge(report)
    assert report.problems == []
    assert report.growth["worker"] == 0.0


def test_memory_growing_after_the_warm_up_fails_naming_the_process() -> None:
    report = SoakReport(samples=_samples([500 + 10 * i for i in range(20)]))
    judge(report)
    assert len(report.problems) == 1
    assert report.problems[0].startswith("worker: RSS grew")


def test_lag_past_the_bound_fails() -> None:
    report = SoakReport(samples=_samples([500.0] * 20, lag=LAG_BOUND_EVENTS))
    judge(report)
    assert any("lag reached" in p for p in report.problems)


def test_too_short_a_run_is_reported_not_passed(tmp_path: Path) -> None:
    report = SoakReport(samples=_samples([500.0] * 4))
    judge(report)
    assert report.problems and "run longer" in report.problems[0]
    write_csv(report, tmp_path / "soak.csv")
    lines = (tmp_path / "soak.csv").read_text().splitlines()
    assert lines[0].startswith("t_s,relay_lag,projector_lag,backlog,settled_per_s,rss_mb_api")
    assert len(lines) == 5
