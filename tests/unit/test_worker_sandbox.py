"""The engine modules passed through the workflow sandbox stay fit for it.

A passed-through module is imported once per worker process and shared by every
workflow run, and the sandbox no longer checks what it calls. So each one may import
only the deterministic standard library, temporalio, and the other passed-through
modules, and calls no clock, random source or I/O of its own.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from worker import ENGINE_MODULES, workflow_runner

# Standard-library modules a workflow may use: no clock, randomness, I/O or threads.
DETERMINISTIC_STDLIB = {
    "__future__",
    "asyncio",
    "collections",
    "dataclasses",
    "datetime",  # for timedelta; datetime.now() is refused below
    "enum",
    "sys",  # engine.linear_saga reads its caller's module name
    "typing",
}
NONDETERMINISTIC_CALLS = re.compile(
    r"(?<!workflow)\.(now|utcnow|today|time|random|uuid4)\(|\bopen\("
)


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    return Path(spec.origin).read_text()


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_a_passed_through_module_imports_only_what_the_sandbox_allows(module: str) -> None:
    outside = {
        name
        for name in _imports(ast.parse(_source(module)))
        if name.split(".")[0] not in DETERMINISTIC_STDLIB
        and name.split(".")[0] != "temporalio"
        and name not in ENGINE_MODULES
    }
    assert not outside, f"{module} imports {sorted(outside)}: not safe to pass through"


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_a_passed_through_module_calls_no_clock_or_random_source(module: str) -> None:
    found = NONDETERMINISTIC_CALLS.findall(_source(module))
    assert not found, f"{module} calls {found}: use workflow.now() / workflow.random()"


def test_the_saga_flows_themselves_stay_sandboxed() -> None:
    passthrough = workflow_runner().restrictions.passthrough_modules
    assert set(ENGINE_MODULES) <= passthrough
    for flow in ("workflows.order_saga", "workflows.returns_saga", "workflows.trip_saga"):
        assert flow not in passthrough
    strict = workflow_runner(engine_passthrough=False).restrictions.passthrough_modules
    assert not set(ENGINE_MODULES) & strict
