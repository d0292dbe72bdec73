"""Console sessions for people: an API key once at login, then a session cookie.

The cookie holds a random token only (never the key); the server keeps the
principal, scopes, CSRF token and expiry. Why in memory: a session is cheap to
redo (log in again) and this keeps the key ring the single source of truth; a
restarted API, or one behind a load balancer without stickiness, asks again.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from api.auth import KeyRing, Scope

COOKIE = "sagaflow_console"


@dataclass(frozen=True)
class Session:
    """A logged-in person: who, what they may do, their CSRF token, when it ends."""

    principal: str
    scopes: frozenset[Scope]
    csrf: str
    expires_at: float

    @property
    def can_act(self) -> bool:
        """Whether the key may change anything (write or admin)."""
        return bool(self.scopes & {Scope.WRITE, Scope.ADMIN})

    @property
    def is_admin(self) -> bool:
        """Whether the key may take operator actions (parked steps, dead letters)."""
        return Scope.ADMIN in self.scopes

    def allows(self, scope: Scope) -> bool:
        """Whether the session holds ``scope`` (admin holds every scope)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def csrf_ok(self, presented: str | None) -> bool:
        """Constant-time check of a form's CSRF token."""
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class Sessions:
    """The live sessions of one API process, by cookie token."""

    def __init__(self, keys: KeyRing, ttl_s: float) -> None:
        self.keys, self.ttl_s = keys, ttl_s
        self._by_token: dict[str, Session] = {}

    def login(self, api_key: str) -> tuple[str, Session] | None:
        """A new session for a known key (its token and the session), or None."""
        identity = self.keys.identify(api_key)
        if identity is None:
            return None
        self._expire()
        principal, scopes = identity
        token = secrets.token_urlsafe(32)
        session = Session(principal, scopes, secrets.token_urlsafe(32), time.time() + self.ttl_s)
        self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> tuple[Session | None, bool]:
        """The session of a cookie token, and whether the token was known but expired."""
        if not token:
            return None, False
        session = self._by_token.get(token)
        if session is None:
            return None, False
        if session.expires_at < time.time():
            self._by_token.pop(token, None)
            return None, True
        return session, False

    def logout(self, token: str | None) -> None:
        """Forget a session."""
        if token:
            self._by_token.pop(token, None)

    def _expire(self) -> None:
        now = time.time()
        for token in [t for t, s in self._by_token.items() if s.expires_at < now]:
            del self._by_token[token]
