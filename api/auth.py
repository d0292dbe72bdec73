"""API keys with scopes (read, write, admin), compared in constant time.

Keys come from settings (``SAGAFLOW_API_KEYS``, a JSON object of key → scopes);
in development the dev key (``SAGAFLOW_DEV_API_KEY``) has every scope. Settings
refuse the default dev key outside development.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.security import APIKeyHeader

from api.errors import ApiError
from sagaflow.settings import Environment, Settings

if TYPE_CHECKING:
    from api.container import Container
    from application import Context


class Scope(StrEnum):
    """What a key may do: read queries, write commands, admin operations."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class KeyRing:
    """The configured keys and their scopes."""

    def __init__(self, settings: Settings) -> None:
        keys: dict[bytes, tuple[str, frozenset[Scope]]] = {
            key.encode(): (
                principal_of(key),
                frozenset(Scope(s.strip()) for s in scopes.split(",") if s.strip()),
            )
            for key, scopes in settings.api_keys.items()
        }
        if settings.environment is Environment.DEVELOPMENT or settings.dev_api_key:
            keys[settings.dev_api_key.get_secret_value().encode()] = ("dev", frozenset(Scope))
        self._keys = list(keys.items())

    def scopes_of(self, presented: str | None) -> frozenset[Scope] | None:
        """The scopes of a presented key, or None when unknown."""
        found = self.identify(presented)
        return None if found is None else found[1]

    def identify(self, presented: str | None) -> tuple[str, frozenset[Scope]] | None:
        """The principal and scopes of a presented key, or None when unknown.

        Why every key is compared: stopping at the first match would leak, through
        timing, how many keys precede the one presented.
        """
        if not presented:
            return None
        candidate = presented.encode()
        found: tuple[str, frozenset[Scope]] | None = None
        for key, identity in self._keys:
            if hmac.compare_digest(key, candidate):
                found = identity
        return found


def principal_of(key: str) -> str:
    """The name recorded for a configured key: ``key:`` and a short digest of it.

    Why a digest: keys carry no names in settings, and the key itself must never
    reach the journal; the digest tells operators' keys apart in the audit trail.
    """
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request's view of the process: its scopes and the container."""

    scopes: frozenset[Scope]
    container: Container
    principal: str = "anonymous"
    """Who the key belongs to (``dev`` or ``key:<digest>``), recorded with operator
    actions."""

    @property
    def ctx(self) -> Context:
        """What the use cases need (store, Temporal client, settings)."""
        return self.container.ctx

    @property
    def user_id(self) -> str:
        """Who to record in event metadata (keys carry no names: their scopes)."""
        return "api:" + ",".join(sorted(s.value for s in self.scopes))


class KeyAuth(APIKeyHeader):
    """The ``X-API-Key`` security scheme, demanding ``scope``: 401 without a known key,
    403 without the scope; resolves to the :class:`Caller`.

    Why one dependency that is also the security scheme (not a scheme plus a scope
    check plus a container lookup): FastAPI solves every dependency on every
    request, and dependency solving was the largest framework cost in the profile
    of the hot read (bench.api); OpenAPI still documents the scheme, because this
    class is one.
    """

    def __init__(self, scope: Scope) -> None:
        super().__init__(
            name="X-API-Key",
            scheme_name="APIKeyHeader",
            description="an API key; scopes: read, write, admin",
            auto_error=False,
        )
        self.scope = scope

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        container = request.app.state.container
        presented = request.headers.get("x-api-key")
        principal, scopes = require_scope(container.keys.identify(presented), presented, self.scope)
        return Caller(scopes, container, principal)


def require_scope(
    identity: tuple[str, frozenset[Scope]] | None, presented: str | None, scope: Scope
) -> tuple[str, frozenset[Scope]]:
    """The key's identity if it grants ``scope`` (or admin): else 401 for a missing or
    unknown key, 403 for a known key without the scope. One rule for every route
    family that takes API keys (the REST routes, the codec endpoint)."""
    if identity is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key" if not presented else "unknown API key",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    _, scopes = identity
    if scope not in scopes and Scope.ADMIN not in scopes:
        raise ApiError(403, "forbidden", f"this API key lacks the {scope.value!r} scope")
    return identity
