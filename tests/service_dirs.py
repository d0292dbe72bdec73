"""Data folders for the services a test session starts, outside pytest's tmp_path."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def service_data_dir(name: str) -> Iterator[Path]:
    """A fresh folder under the system temp folder, removed afterwards.

    Why not pytest's tmp_path: PostgreSQL runs as another system user, so the folders
    above its data are made traversable (o+x), and every pytest session that starts
    meanwhile (``scripts/test tests/unit`` in another terminal) sets
    /tmp/pytest-of-<user> back to 0700: a running session's PostgreSQL then PANICs on
    its own pg_control and every later test fails to connect.
    """
    path = Path(tempfile.mkdtemp(prefix=f"sagaflow-test-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
