"""Temporal's remote codec protocol, for the Web UI and ``temporal`` CLI users.

``POST /codec/decode`` and ``POST /codec/encode`` take and return
``{"payloads": [{"metadata": {name: base64}, "data": base64}]}`` (the JSON form of
``temporal.api.common.v1.Payloads``), through the same codec the worker and the
clients use (``sagaflow/codec.py``). Browsers reach them from the origins in
SAGAFLOW_CODEC_CORS_ORIGINS (the Temporal Web UI's by default; ``api/main.py``
answers their preflights).

Auth: an API key, in ``X-API-Key`` or as ``Authorization: Bearer <key>`` (what the
UI can send); decode needs ``read``, encode ``write``. Not in the OpenAPI schema:
the protocol is Temporal's, and the routes answer 404 while the codec is off.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from api.auth import Scope, require_scope
from api.container import Container
from api.errors import ApiError
from sagaflow.codec import CodecKeyError, EncryptionCodec
from sagaflow.settings import Environment, Settings

router = APIRouter(prefix="/codec", tags=["codec"], include_in_schema=False)

#: what the Web UI sends (content-type, x-namespace, an optional bearer token), plus
#: X-API-Key for other browser clients.
CORS_HEADERS = ["content-type", "x-namespace", "authorization", "x-api-key"]


def presented_key(request: Request) -> str | None:
    """The API key of a codec request: ``X-API-Key``, else ``Authorization: Bearer``."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def is_dev_web_ui(request: Request, settings: Settings) -> bool:
    """A browser call from the configured Web UI origin, in development only.

    Why this exception: the local dev server's Web UI has no login and cannot attach
    an API key to its codec calls; in development the API's key is the published
    default anyway. Outside development every codec call needs a key.
    """
    origin = request.headers.get("origin")
    return (
        settings.environment is Environment.DEVELOPMENT
        and origin is not None
        and origin.rstrip("/") in settings.codec_origins
    )


class CodecAuth:
    """401 without a known key (or the dev Web UI), 403 without ``scope``."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, request: Request) -> None:
        container: Container = request.app.state.container
        presented = presented_key(request)
        identity = container.keys.identify(presented)
        if identity is None and not presented and is_dev_web_ui(request, container.settings):
            return
        require_scope(identity, presented, self.scope)


async def _payloads(request: Request) -> tuple[EncryptionCodec, Payloads]:
    codec: EncryptionCodec | None = request.app.state.codec
    if codec is None:
        raise ApiError(
            404, "codec off", "payload encryption is off: set SAGAFLOW_CODEC_KEYS to turn it on"
        )
    body = await request.body()
    payloads = Payloads()
    try:
        json_format.Parse(body.decode("utf-8"), payloads)
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise ApiError(
            422,
            "invalid request",
            'expected {"payloads": [{"metadata": {name: base64}, "data": base64}]}: '
            + str(exc).splitlines()[0][:200],
        ) from None
    return codec, payloads


def _answer(payloads: Sequence[Payload]) -> JSONResponse:
    return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in payloads]})


@router.post("/encode", dependencies=[Depends(CodecAuth(Scope.WRITE))])
async def codec_encode(request: Request) -> JSONResponse:
    """Encrypt payloads with the current key (Temporal remote codec protocol)."""
    codec, payloads = await _payloads(request)
    return _answer(await codec.encode(payloads.payloads))


@router.post("/decode", dependencies=[Depends(CodecAuth(Scope.READ))])
async def codec_decode(request: Request) -> JSONResponse:
    """Decrypt payloads; plain ones come back unchanged; an unknown key id is 422."""
    codec, payloads = await _payloads(request)
    try:
        decoded = await codec.decode(payloads.payloads)
    except CodecKeyError as exc:
        raise ApiError(422, "cannot decode", str(exc)) from None
    return _answer(decoded)
