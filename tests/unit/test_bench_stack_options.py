"""bench.stack's --compare: which stacks a comparison asks for, and its refusals."""

import argparse

import pytest

from bench.stack import variants_of


def options(compare: str | None, temporal: str = "tuned") -> argparse.Namespace:
    return argparse.Namespace(compare=compare, temporal=temporal)


def test_compare_gives_one_labelled_stack_per_value_to_services_and_processes():
    variants = variants_of(options("snapshot_every=100,20"))
    assert [v.label for v in variants] == ["snapshot_every=100", "snapshot_every=20"]
    assert [v.overrides for v in variants] == [{"snapshot_every": "100"}, {"snapshot_every": "20"}]
    assert variants[1].env == {"SAGAFLOW_SNAPSHOT_EVERY": "20"}


def test_compare_values_that_hold_commas_are_separated_by_semicolons():
    one = "history.transferProcessorMaxPollRPS=100"
    two = f"{one},matching.numTaskqueueReadPartitions=1"
    variants = variants_of(options(f"temporal_dev_dynamic_config={one};{two}"))
    assert [v.overrides["temporal_dev_dynamic_config"] for v in variants] == [one, two]


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ("no_such_setting=1,2", "a sagaflow setting and two values"),
        ("snapshot_every=20", "a sagaflow setting and two values"),
        ("snapshot_every=20,-1", "snapshot_every=-1"),
    ],
)
def test_compare_refuses_what_it_cannot_run(compare: str, message: str):
    with pytest.raises(ValueError, match=message):
        variants_of(options(compare))
