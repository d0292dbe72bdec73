"""API keys with scopes (read, write, admin), compared in constant time.

Keys come from settings (``SAGAFLOW_API_KEYS``, a JSON object of key → scopes);
in development the dev key (``SAGAFLOW_DEV_API_KEY``) has every scope. Settings
refuse the default dev key outside development.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from api.errors import ApiError
from sagaflow.settings import Environment, Settings

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


class Scope(StrEnum):
    """What a key may do: read queries, write commands, admin operations."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class KeyRing:
    """The configured keys and their scopes."""

    def __init__(self, settings: Settings) -> None:
        keys: dict[bytes, frozenset[Scope]] = {
            key.encode(): frozenset(Scope(s.strip()) for s in scopes.split(",") if s.strip())
            for key, scopes in settings.api_keys.items()
        }
        if settings.environment is Environment.DEVELOPMENT or settings.dev_api_key:
            keys[settings.dev_api_key.get_secret_value().encode()] = frozenset(Scope)
        self._keys = list(keys.items())

    def scopes_of(self, presented: str | None) -> frozenset[Scope] | None:
        """The scopes of a presented key, or None when unknown.

        Why every key is compared: stopping at the first match would leak, through
        timing, how many keys precede the one presented.
        """
        if not presented:
            return None
        candidate = presented.encode()
        found: frozenset[Scope] | None = None
        for key, scopes in self._keys:
            if hmac.compare_digest(key, candidate):
                found = scopes
        return found


def require(scope: Scope) -> Callable[..., Coroutine[Any, Any, frozenset[Scope]]]:
    """A dependency that demands ``scope``: 401 without a known key, 403 without the scope."""

    async def dependency(
        request: Request, presented: str | None = Security(API_KEY_HEADER)
    ) -> frozenset[Scope]:
        ring: KeyRing = request.app.state.container.keys
        scopes = ring.scopes_of(presented)
        if scopes is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing API key" if not presented else "unknown API key",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        if scope not in scopes and Scope.ADMIN not in scopes:
            raise ApiError(403, "forbidden", f"this API key lacks the {scope.value!r} scope")
        return scopes

    return dependency
