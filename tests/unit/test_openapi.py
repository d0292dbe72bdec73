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


def test_every_link_names_a_real_operation_and_its_parameters() -> None:
    schema = openapi_schema()
    ops = {op["operationId"]: op for methods in schema["paths"].values() for op in methods.values()}
    links = 0
    for source in ops.values():
        for response in source["responses"].values():
            for name, link in response.get("links", {}).items():
                links += 1
                target = ops[link["operationId"]]
                names = {p["name"] for p in target.get("parameters", [])}
                assert set(link["parameters"]) <= names, name
                required = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert required <= set(link["parameters"]), name
                for expression in link["parameters"].values():
                    if expression.startswith("$request.path."):
                        own = {p["name"] for p in source.get("parameters", [])}
                        assert expression.removeprefix("$request.path.") in own, name
    assert links >= 30
