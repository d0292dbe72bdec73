"""``sagaflow saga test TYPE``: the matrix from the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sagaflow.cli import app

pytestmark = pytest.mark.integration


def test_prints_the_matrix_as_json_and_exits_0_when_every_scenario_passes() -> None:
    result = CliRunner().invoke(app, ["saga", "test", "trip", "--only", "book_hotel/re", "--json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.output)
    assert [r["scenario"] for r in reports] == ["trip/book_hotel/reject"]
    assert reports[0]["expected"] == reports[0]["observed"] == "compensated"
    assert reports[0]["passed"] and reports[0]["invariants_held"] == reports[0]["invariants"]


def test_prints_a_table_for_people() -> None:
    result = CliRunner().invoke(app, ["saga", "test", "TripSaga", "--only", "book_car/reject"])
    assert result.exit_code == 0, result.output
    assert "trip/book_car/reject" in result.output
    assert "1 of 1 scenarios passed" in result.output


def test_an_unknown_saga_type_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(app, ["saga", "test", "shipping"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: unknown saga type 'shipping'; known types: order, returns, trip"
    )
