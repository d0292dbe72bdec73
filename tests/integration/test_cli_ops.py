"""The operator CLI calls the same use cases as the API: results and one-line refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sagaflow.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SAGAFLOW_DATABASE_URL", database_url)
    return CliRunner()


def test_registers_and_restocks_a_product_once_per_idempotency_key(cli: CliRunner) -> None:
    registered = cli.invoke(app, ["products", "register", "CLI-1", "Mug", "450"])
    assert registered.exit_code == 0, registered.output
    assert "sku=CLI-1" in registered.output
    assert "unit_price_cents=450" in registered.output
    for _ in range(2):
        restocked = cli.invoke(app, ["products", "restock", "CLI-1", "5", "--idempotency-key", "k"])
        assert restocked.exit_code == 0, restocked.output
    assert "available=5," in restocked.output
    other = cli.invoke(app, ["products", "restock", "CLI-1", "7", "--idempotency-key", "k"])
    assert other.exit_code == 1
    assert other.output.strip() == (
        "refused: this Idempotency-Key was used with a different request body"
    )
    shown = cli.invoke(app, ["products", "restock", "CLI-1", "5", "--idempotency-key", "k"])
    assert "available=5," in shown.output  # the refused request added nothing


def test_refusals_are_one_line_and_exit_1(cli: CliRunner) -> None:
    unknown = cli.invoke(app, ["products", "restock", "GHOST", "5"])
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "refused: no product with id 'GHOST'"
    cli.invoke(app, ["products", "register", "CLI-2", "Mug", "450"])
    again = cli.invoke(app, ["products", "register", "CLI-2", "Mug", "450"])
    assert again.exit_code == 1
    assert again.output.startswith("refused: ")
    assert len(again.output.strip().splitlines()) == 1
    missing = cli.invoke(app, ["dead-letters", "replay", "999"])
    assert missing.exit_code == 1
    assert missing.output.strip() == "refused: no dead letter with id '999'"
