"""Write the API's OpenAPI schema: ``python -m api.openapi > api/openapi.json``.

The schema is kept in the repository; tests/unit/test_openapi.py fails when the
code and the kept file disagree.
"""

from __future__ import annotations

import json
from typing import Any

from api.main import create_app
from sagaflow.settings import load_settings


def openapi_schema() -> dict[str, Any]:
    """The schema of the app (no connection is opened to build it)."""
    app = create_app(load_settings(database_url="postgresql://schema@localhost/schema"))
    return app.openapi()


def main() -> None:
    """Print the schema as stable, indented JSON."""
    print(json.dumps(openapi_schema(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
