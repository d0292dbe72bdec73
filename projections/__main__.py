"""``python -m projections projector`` (and the other projection commands)."""

from projections.cli import app

app()
