"""Encrypted payloads: an AES-GCM payload codec and the data converter every client uses.

With ``SAGAFLOW_CODEC_KEYS`` set, every payload a sagaflow client or worker sends
to Temporal (workflow and activity inputs and results, local-activity markers,
memo, the UI summary, update and query arguments, failure messages) is encrypted
before it leaves the process: the server and its history hold only ciphertext.

Wire format of an encrypted payload (the convention of Temporal's encryption
samples, so other SDKs' codecs and the Web UI's remote codec can follow it):

* metadata ``encoding: binary/encrypted`` and ``encryption-key-id: <key id>``;
* data ``nonce (12 bytes) || AES-256-GCM(key, nonce, inner payload serialized)``,
  with the key id as associated data (a payload relabelled to another key fails).

Rotation: the keyring holds every key that may still be needed; the one named by
``SAGAFLOW_CODEC_KEY_ID`` (default: the first listed) encrypts, any listed one
decrypts, so histories written under a retired key still replay and decode.

Why decode passes unencrypted payloads through: histories recorded before the
codec was switched on (and the tests' saved histories) hold plain JSON payloads;
they must still replay once it is on.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

if TYPE_CHECKING:
    from sagaflow.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12


class CodecKeyError(ValueError):
    """A payload cannot be decrypted: unknown key id, or the ciphertext does not verify."""


@dataclass(frozen=True)
class Keyring:
    """The codec's keys by id and the id of the one that encrypts."""

    keys: Mapping[str, bytes]
    current: str

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"key id {self.current!r} is not in the keyring")


def parse_keys(text: str) -> dict[str, bytes]:
    """``id:<base64 of 32 bytes>[,id:...]`` → {id: key}, in the order given.

    ValueError says which entry is wrong without echoing any key material.
    """
    keys: dict[str, bytes] = {}
    for position, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not key_id:
            raise ValueError(f"entry {position} is not id:<base64 key>")
        if key_id in keys:
            raise ValueError(f"key id {key_id!r} is listed twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"key {key_id!r} is not {KEY_BYTES} bytes of base64 "
                "(make one with: openssl rand -base64 32)"
            )
        keys[key_id] = key
    if not keys:
        raise ValueError("no key given (id:<base64 key>[,id:...])")
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads; the key id travels in the payload's metadata."""

    def __init__(self, keyring: Keyring) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}
        self._current_id = keyring.current.encode()
        self._current = self._ciphers[keyring.current]

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload (serialized whole, metadata included) with the current key."""
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt encrypted payloads with the key their metadata names; others pass."""
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """One payload, encrypted with the current key."""
        # Why a random nonce per payload: GCM must never reuse a (key, nonce) pair;
        # 96 random bits keep the chance negligible well past 2**32 payloads per key.
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, payload.SerializeToString(), self._current_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self._current_id},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """One payload, decrypted; returned as is when it is not encrypted."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        from cryptography.exceptions import InvalidTag

        raw_id = payload.metadata.get(KEY_ID_METADATA, b"")
        key_id = raw_id.decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self.keyring.keys)
            raise CodecKeyError(
                f"payload encrypted with key id {key_id!r}, which is not in "
                f"SAGAFLOW_CODEC_KEYS (known ids: {known}); add that key to decrypt it"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], raw_id)
        except InvalidTag:
            raise CodecKeyError(
                f"payload encrypted with key id {key_id!r} does not verify: the key "
                "under that id differs from the one that encrypted it, or the data was altered"
            ) from None
        inner = Payload()
        inner.ParseFromString(plain)
        return inner


def keyring_of(settings: Settings) -> Keyring | None:
    """The configured keyring, or None when payload encryption is off."""
    if settings.codec_keys is None:
        return None
    keys = parse_keys(settings.codec_keys.get_secret_value())
    return Keyring(keys, settings.codec_key_id or next(iter(keys)))


def codec_of(settings: Settings) -> EncryptionCodec | None:
    """The payload codec the settings ask for (None: payloads travel as plain JSON)."""
    keyring = keyring_of(settings)
    return EncryptionCodec(keyring) if keyring else None


def data_converter(settings: Settings) -> DataConverter:
    """The data converter of every Temporal client and replayer sagaflow builds.

    Codec off: Temporal's default (JSON payloads, histories unchanged). Codec on:
    the same JSON payloads, encrypted, and failure messages and stack traces moved
    into the encrypted attributes (otherwise they would stay readable in history).
    """
    codec = codec_of(settings)
    if codec is None:
        return DataConverter.default
    return DataConverter(
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
