"""The OpenAPI schema kept in the repository matches the code, and documents every route."""

from __future__ import annotations

import json
from pathlib import Path

from api.openapi import openapi_schema

KEPT = Path(__file__).resolve().parents[2] / "api" / "openapi.json"


def test_the_kept_schema_matches_the_code() -> None:
    assert json.loads(KEPT.read_text()) == openapi_schema(), (
        "api/openapi.json is stale: python -m api.openapi > api/openapi.json"
    )


def test_every_route_has_a_summary_and_documents_its_errors() -> None:
    schema = openapi_schema()
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            assert op.get("description") or op.get("summary"), f"{method} {path}"
            if path not in ("/health", "/ready", "/metrics"):
                assert {"401", "403", "422"} <= set(op["responses"]), f"{method} {path}"
    assert "Problem" in schema["components"]["schemas"]
