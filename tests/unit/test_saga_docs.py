"""docs/sagas.md cannot rot: every code block marked ``excerpt`` is the tutorial's code.

The tutorial (``workflows/trip_saga.py``, ``activities/trip.py``) is itself run by
``tests/integration/test_trip_saga.py`` and replayed by ``tests/replay``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "sagas.md"
TUTORIAL = [ROOT / "workflows" / "trip_saga.py", ROOT / "activities" / "trip.py"]
EXCERPT = re.compile(r"^```python excerpt\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def excerpts() -> list[str]:
    """The code of every ``python excerpt`` block in the document."""
    return EXCERPT.findall(DOC.read_text())


def test_the_document_shows_excerpts_of_both_tutorial_files() -> None:
    sources = [path.read_text() for path in TUTORIAL]
    found = excerpts()
    assert len(found) >= 8
    assert all(any(block in src for block in found) for src in sources)


def test_every_excerpt_appears_verbatim_in_the_tutorial_code() -> None:
    sources = "\n".join(path.read_text() for path in TUTORIAL)
    missing = [block for block in excerpts() if block not in sources]
    assert not missing, f"docs/sagas.md excerpts not in the tutorial code: {missing}"


def test_the_registry_line_in_the_document_is_the_registry_s() -> None:
    registry = (ROOT / "workflows" / "registry.py").read_text()
    line = 'SagaType(TRIP, TripSagaWorkflow, "activities.trip:build_activities"),'
    assert line in DOC.read_text()
    assert line in registry


def test_the_tutorial_imports_only_the_public_api() -> None:
    public = {"workflows.definition", "workflows.engine", "workflows.models"}
    project = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    imports = re.findall(r"^(?:from|import) ([\w.]+)", TUTORIAL[0].read_text(), re.MULTILINE)
    # Project modules only through the public API; the rest is stdlib and temporalio.
    private = [m for m in imports if m.split(".")[0] in project and m not in public]
    assert not private, private
