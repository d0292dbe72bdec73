"""``python -m streaming relay``."""

from streaming.cli import app

app()
