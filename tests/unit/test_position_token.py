"""The position token round-trips, whatever characters a source name holds."""

from __future__ import annotations

import pytest

from streaming.transport import Position


@pytest.mark.parametrize(
    "position",
    [
        Position("orders", 3, 1234),
        Position("sagaflow.events.sagaflow-projector.5", 5, 77),
        Position("$feed", 0, 1),
        Position("odd/queue@name", 2, 0),
    ],
)
def test_a_position_token_parses_back_to_the_same_position(position: Position) -> None:
    assert Position.parse(position.token()) == position


@pytest.mark.parametrize("token", ["", "orders", "orders@1", "orders/x@1", "orders/1@"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="not a position token"):
        Position.parse(token)
