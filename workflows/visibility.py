"""Temporal visibility of sagas: search attributes and the start summary.

``SagaType``, ``SagaStatus`` and ``SagaStep`` for every saga, plus each type's
declared business keys (``CustomerId``, ``OrderTotal``...). The local dev server
registers them at start (``--search-attribute``, from :func:`registrations`); the
engine upserts the ones that changed as the saga moves, so
``temporal workflow list --query 'SagaStatus="compensation_parked"'`` finds the
parked sagas of every type.

Pure: imported by workflow code and by the client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from workflows.definition import BusinessKey, SagaDefinition

if TYPE_CHECKING:
    from workflows.saga import Saga

SAGA_TYPE = SearchAttributeKey.for_keyword("SagaType")
SAGA_STATUS = SearchAttributeKey.for_keyword("SagaStatus")
SAGA_STEP = SearchAttributeKey.for_keyword("SagaStep")

_TEMPORAL_TYPES = {"keyword": "Keyword", "float": "Double", "int": "Int", "text": "Text"}


def key_of(key: BusinessKey) -> SearchAttributeKey[Any]:
    """The typed search-attribute key of a business key."""
    match key.search_type:
        case "keyword":
            return SearchAttributeKey.for_keyword(key.name)
        case "float":
            return SearchAttributeKey.for_float(key.name)
        case "int":
            return SearchAttributeKey.for_int(key.name)
        case "text":
            return SearchAttributeKey.for_text(key.name)
    raise ValueError(f"business key {key.name}: unknown search type {key.search_type!r}")


def _typed(key: BusinessKey, value: str) -> Any:
    if key.search_type == "float":
        return float(value)
    if key.search_type == "int":
        return int(float(value))
    return value


def registrations(definitions: Iterable[SagaDefinition]) -> dict[str, str]:
    """Every search attribute the saga types need: name → Temporal type name."""
    found = {"SagaType": "Keyword", "SagaStatus": "Keyword", "SagaStep": "Keyword"}
    for definition in definitions:
        for key in definition.keys:
            kind = _TEMPORAL_TYPES[key.search_type]
            if found.setdefault(key.name, kind) != kind:
                raise ValueError(
                    f"search attribute {key.name} declared as {found[key.name]} and {kind}"
                )
    return found


def input_keys(definition: SagaDefinition, saga_input: Any) -> dict[str, str]:
    """The business keys readable from the input, as text."""
    return {k.name: str(k.of(saga_input)) for k in definition.keys if k.of is not None}


def start_attributes(
    definition: SagaDefinition, saga_input: Any, *, business_keys: bool = True
) -> TypedSearchAttributes:
    """The search attributes a saga starts with (set by the client, no workflow command);
    without ``business_keys``, only the type and status."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(SAGA_TYPE, definition.name),
        SearchAttributePair(SAGA_STATUS, "running"),
    ]
    if not business_keys:
        return TypedSearchAttributes(pairs)
    keys = {k.name: k for k in definition.keys}
    for name, value in input_keys(definition, saga_input).items():
        pairs.append(SearchAttributePair(key_of(keys[name]), _typed(keys[name], value)))
    return TypedSearchAttributes(pairs)


def search_updates(saga: Saga, upserted: dict[str, Any]) -> list[SearchAttributeUpdate[Any]]:
    """Updates for the attributes whose value changed since the last upsert
    (``upserted`` is updated in place)."""
    wanted: dict[str, tuple[SearchAttributeKey[Any], Any]] = {
        "SagaStatus": (SAGA_STATUS, saga.current_status),
        "SagaStep": (SAGA_STEP, saga.current_step),
    }
    keys = {k.name: k for k in saga.definition.keys} if saga.options.business_keys else {}
    for name, value in saga.keys.items():
        if name in keys:
            wanted[name] = (key_of(keys[name]), _typed(keys[name], value))
    updates: list[SearchAttributeUpdate[Any]] = []
    for name, (key, value) in wanted.items():
        if upserted.get(name) != value:
            upserted[name] = value
            updates.append(key.value_set(value))
    return updates
