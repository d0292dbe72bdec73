"""Assembles the FastAPI app: lifespan wiring, error handlers, body limit, routes."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from api.console import ConsoleState, install_console
from api.container import Container
from api.contract import refine
from api.deps import single_valued_query
from api.errors import install_error_handlers, problem_response
from api.routes import codec, health, operations, orders, products, returns, sagas
from eventstore.postgres import PostgresEventStore
from sagaflow.clients import connect_temporal
from sagaflow.codec import codec_of
from sagaflow.settings import Settings, SettingsError

log = logging.getLogger("sagaflow.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, "request too large", f"the body is over {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class CodecCors:
    """CORS for the ``/codec/`` routes only (the Temporal Web UI calls them from its
    own origin); every other route stays same-origin.

    Preflights (OPTIONS with ``Access-Control-Request-Method``) from an allowed origin
    are answered here, without auth: a browser never sends credentials on one.
    """

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        from starlette.middleware.cors import CORSMiddleware

        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_headers=codec.CORS_HEADERS,
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/codec/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _refine_openapi(app: FastAPI) -> None:
    """Serve the schema with what FastAPI cannot infer (api/contract.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``; connections open in the lifespan, not here."""
    if not settings.database_url:
        raise SettingsError("SAGAFLOW_DATABASE_URL is not set: the API needs PostgreSQL")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert settings.database_url
        store = await PostgresEventStore.connect(
            settings.database_url, max_size=settings.db_pool_size
        )
        try:
            temporal = await connect_temporal(settings)
        except Exception as exc:
            # Why start anyway: queries of the read side still work; /ready says
            # Temporal is missing and commands answer 503 until a restart.
            log.error("Temporal unreachable at start-up: %s", exc)
            temporal = None
        app.state.container = container = Container(settings, store, temporal)
        app.state.console = console = ConsoleState.build(container)
        # Why: everything built so far lives as long as the process; frozen, the
        # collector stops re-scanning it, and a full collection no longer stalls
        # every request in flight for 100+ ms (bench.api's p99).
        gc.freeze()
        try:
            yield
        finally:
            await console.live.stop()
            await store.close()

    app = FastAPI(
        title="sagaflow",
        version="0.1.0",
        description="Commands start and steer order sagas; queries read the projections.",
        lifespan=lifespan,
        # Operation ids are the route functions' names: the links in the schema
        # (api/contract.py) and generated clients refer to them.
        generate_unique_id_function=lambda route: route.name,
        dependencies=[Depends(single_valued_query)],
    )
    install_error_handlers(app)
    for module in (orders, returns, products, sagas, operations, health, codec):
        app.include_router(module.router)
    install_console(app)
    _refine_openapi(app)
    # The codec of every Temporal client of the process (connect_temporal), for /codec.
    app.state.codec = codec_of(settings)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(CodecCors, origins=settings.codec_origins)
    return app
