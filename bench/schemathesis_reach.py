"""How far a schemathesis run got with real ids: per operation with path parameters.

    python -m bench.schemathesis_reach RUN.har [--since ISO-TIME] [--schema api/openapi.json]

Reads the HAR file ``st run --report har`` wrote (a file still being written: its
complete entries). A call is *with real ids* when each path parameter's value had
been handed out earlier in the run by a 2xx response, in a field of its kind
(``KINDS``: an order's ``order_id``, a saga's ``saga_id``, a product's ``sku``, a dead
letter's ``id``...). Such a call *reached* the resource when the answer was 2xx or
409 (the resource exists and refused the transition, e.g. a cancel after shipping);
a 401, 422 or 404 says nothing about it. ``--since`` counts only calls from that
time on (e.g. the start of the stateful phase); ids handed out before still count.
Prints one row per operation with path parameters (calls, with real ids, their 2xx
and 409, their statuses), the number reached, then ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass
class Reach:
    """Counts for one operation."""

    calls: int = 0
    real: int = 0
    ok: int = 0
    conflict: int = 0
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def reached(self) -> bool:
        return self.ok + self.conflict > 0


def templates(schema: dict[str, Any]) -> list[tuple[str, str, re.Pattern[str], list[str]]]:
    """(method, path template, matcher, parameter names) of the operations with path
    parameters; literal paths first so ``/sagas/parked`` is not read as an id."""
    out = []
    for path, ops in schema["paths"].items():
        names = re.findall(r"{([^}]+)}", path)
        if not names:
            continue
        pattern = re.escape(path)
        for name in names:
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
        for method in ops:
            if method in METHODS:
                out.append((method.upper(), path, re.compile(f"^{pattern}$"), names))
    return out


# Which response fields hand out the ids a path parameter takes (an order's saga has
# the order's id; a dead letter's id is its ``id``; a saga type is named by ``name``
# in ``GET /saga-types``).
KINDS = {
    "order_id": ("order_id",),
    "saga_id": ("saga_id", "order_id", "return_id"),
    "return_id": ("return_id",),
    "sku": ("sku",),
    "customer_id": ("customer_id",),
    "dead_letter_id": ("dead_letter_id", "dead_letter:id"),
    "saga_type": ("saga_type", "saga_type:name"),
}


def _ids(value: Any, into: dict[str, set[str]], path: str) -> None:
    """The values of the id fields anywhere in ``value`` (a response of ``path``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list):
                _ids(item, into, path)
            elif isinstance(item, str | int) and not isinstance(item, bool):
                into.setdefault(key, set()).add(str(item))
                if key == "id" and path.startswith("/dead-letters"):
                    into.setdefault("dead_letter:id", set()).add(str(item))
                if key == "name" and path == "/saga-types":
                    into.setdefault("saga_type:name", set()).add(str(item))
    elif isinstance(value, list):
        for item in value:
            _ids(item, into, path)


def _real(name: str, value: str, seen: dict[str, set[str]]) -> bool:
    return any(value in seen.get(field, ()) for field in KINDS.get(name, (name,)))


def _literal_paths(schema: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, ops in schema["paths"].items()
        if "{" not in path
        for method in ops
        if method in METHODS
    }


def reach(
    entries: list[dict[str, Any]], schema: dict[str, Any], since: datetime | None = None
) -> dict[tuple[str, str], Reach]:
    """Counts per (method, path template) of the operations with path parameters."""
    ops = templates(schema)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    literal = _literal_paths(schema)
    seen: dict[str, set[str]] = {}
    table = {(method, path): Reach() for method, path, _, _ in ops}
    for entry in sorted(entries, key=lambda e: e["startedDateTime"]):
        request, response = entry["request"], entry["response"]
        method, status = request["method"], response["status"]
        path = unquote(urlsplit(request["url"]).path)
        counted = since is None or datetime.fromisoformat(entry["startedDateTime"]) >= since
        if counted and (method, path) not in literal:
            for op_method, template, matcher, names in ops:
                match = matcher.match(path) if op_method == method else None
                if match is None:
                    continue
                row = table[(op_method, template)]
                row.calls += 1
                if all(_real(name, match.group(name), seen) for name in names):
                    row.real += 1
                    row.statuses[status] += 1
                    if 200 <= status < 300:
                        row.ok += 1
                    elif status == 409:
                        row.conflict += 1
                break
        if 200 <= status < 300:
            with contextlib.suppress(ValueError):  # a body that is not JSON hands out no id
                _ids(json.loads(response.get("content", {}).get("text") or "null"), seen, path)
    return table


def load_entries(text: str) -> list[dict[str, Any]]:
    """The HAR entries; of a file still being written (a run in progress or stopped),
    the complete ones."""
    try:
        return list(json.loads(text)["log"]["entries"])
    except ValueError:
        decoder = json.JSONDecoder()
        start = text.index('"entries"')
        position = text.index("[", start) + 1
        entries: list[dict[str, Any]] = []
        while True:
            while position < len(text) and text[position] in " \t\r\n,":
                position += 1
            try:
                entry, position = decoder.raw_decode(text, position)
            except ValueError:
                return entries
            entries.append(entry)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("har", type=Path)
    parser.add_argument("--since", type=datetime.fromisoformat, default=None)
    parser.add_argument("--schema", type=Path, default=ROOT / "api" / "openapi.json")
    args = parser.parse_args(argv)
    entries = load_entries(args.har.read_text())
    schema = json.loads(args.schema.read_text())
    table = reach(entries, schema, args.since)
    width = max(len(f"{m} {p}") for m, p in table)
    print(f"{'operation':<{width}}  calls  real-id  2xx      409  reached  statuses(real ids)")
    for (method, path), row in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(row.statuses.items()))
        print(
            f"{method + ' ' + path:<{width}}  {row.calls:>5}  {row.real:>7}  {row.ok:>3}"
            f"  {row.conflict:>7}  {'yes' if row.reached else 'no':>7}  {statuses}"
        )
    reached = sum(row.reached for row in table.values())
    print(f"reached with real ids: {reached} of {len(table)} operations with path parameters")
    result = {
        "operations": len(table),
        "reached": reached,
        "rows": {
            f"{m} {p}": {"calls": r.calls, "real": r.real, "2xx": r.ok, "409": r.conflict}
            for (m, p), r in table.items()
        },
    }
    print("RESULT " + json.dumps(result, sort_keys=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
