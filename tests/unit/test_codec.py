"""The AES-GCM payload codec: round trips, rotation, refusals, and its settings."""

from __future__ import annotations

import base64
import itertools
import os
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from sagaflow.codec import (
    ENCODING,
    KEY_ID_METADATA,
    CodecKeyError,
    EncryptionCodec,
    Keyring,
    codec_of,
    data_converter,
)
from sagaflow.settings import SettingsError, load_settings

K1, K2 = os.urandom(32), os.urandom(32)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def codec(current: str = "k2", **keys: bytes) -> EncryptionCodec:
    return EncryptionCodec(Keyring(keys or {"k2": K2, "k1": K1}, current))


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def test_encrypts_with_the_current_key_and_decrypts_back() -> None:
    original = plain("customer c-secret-42")
    [sealed] = await codec().encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"k2"
    assert b"c-secret-42" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()  # inner metadata is sealed too
    [back] = await codec().decode([sealed])
    assert back == original


async def test_two_encryptions_of_one_payload_differ() -> None:
    a, b = await codec().encode([plain("x"), plain("x")])
    assert a.data != b.data


async def test_a_payload_of_a_retired_key_still_decrypts_after_rotation() -> None:
    [old] = await codec("k1", k1=K1).encode([plain("before rotation")])
    rotated = codec("k2", k2=K2, k1=K1)
    [back] = await rotated.decode([old])
    assert back == plain("before rotation")
    [new] = await rotated.encode([back])
    assert new.metadata[KEY_ID_METADATA] == b"k2"


async def test_an_unknown_key_id_fails_naming_it() -> None:
    [sealed] = await codec("k0", k0=os.urandom(32)).encode([plain("x")])
    with pytest.raises(CodecKeyError, match=r"key id 'k0'.*not in SAGAFLOW_CODEC_KEYS.*k2, k1"):
        await codec().decode([sealed])


async def test_another_key_under_the_same_id_or_altered_data_does_not_verify() -> None:
    [sealed] = await codec("k1", k1=K1).encode([plain("x")])
    with pytest.raises(CodecKeyError, match="'k1' does not verify"):
        await codec("k1", k1=K2).decode([sealed])
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + b"\x00")
    with pytest.raises(CodecKeyError, match="does not verify"):
        await codec("k1", k1=K1).decode([tampered])


async def test_relabelling_a_payload_to_another_key_id_does_not_verify() -> None:
    [sealed] = await codec("k1", k1=K1).encode([plain("x")])
    relabelled = Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: b"k2"}, data=sealed.data)
    with pytest.raises(CodecKeyError):
        await codec("k2", k2=K1, k1=K1).decode([relabelled])


async def test_plain_payloads_pass_decode_unchanged() -> None:
    """Histories from before the codec was switched on still decode."""
    assert await codec().decode([plain("old")]) == [plain("old")]


async def test_the_data_converter_round_trips_values_and_is_default_when_off() -> None:
    assert data_converter(load_settings()) is DataConverter.default
    converter = data_converter(load_settings(codec_keys=f"k2:{b64(K2)},k1:{b64(K1)}"))
    [payload] = await converter.encode([{"customer_id": "c-secret-42"}])
    assert b"c-secret-42" not in payload.SerializeToString()
    assert await converter.decode([payload], [dict]) == [{"customer_id": "c-secret-42"}]


def test_the_first_listed_key_encrypts_unless_the_key_id_names_another() -> None:
    keys = f"k2:{b64(K2)},k1:{b64(K1)}"
    first = codec_of(load_settings(codec_keys=keys))
    chosen = codec_of(load_settings(codec_keys=keys, codec_key_id="k1"))
    assert first is not None and first.keyring.current == "k2"
    assert chosen is not None and chosen.keyring.current == "k1"
    assert codec_of(load_settings(codec_keys="")) is None


@pytest.mark.parametrize(
    "keys",
    [
        "k1:" + b64(os.urandom(16)),  # 16 bytes
        "k1:not base64!",
        f"k1:{b64(K1)},k2:{b64(K2)[:-4]}",  # the second one is short
    ],
)
def test_a_key_that_is_not_32_bytes_of_base64_names_the_variable_and_the_key(
    monkeypatch: pytest.MonkeyPatch, keys: str
) -> None:
    monkeypatch.setenv("SAGAFLOW_CODEC_KEYS", keys)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "SAGAFLOW_CODEC_KEYS: key 'k" in message and "not 32 bytes of base64" in message
    assert "\n" not in message
    assert b64(K1) not in message  # no key material in the error


def test_a_key_id_missing_from_the_keyring_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGAFLOW_CODEC_KEYS", f"k2:{b64(K2)},k1:{b64(K1)}")
    monkeypatch.setenv("SAGAFLOW_CODEC_KEY_ID", "k3")
    with pytest.raises(
        SettingsError,
        match=r"^invalid settings: SAGAFLOW_CODEC_KEY_ID: 'k3' is not in "
        r"SAGAFLOW_CODEC_KEYS \(its ids: k2, k1\)$",
    ):
        load_settings()


def test_a_key_id_without_keys_and_a_repeated_id_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGAFLOW_CODEC_KEY_ID", "k1")
    with pytest.raises(SettingsError, match="SAGAFLOW_CODEC_KEY_ID: .*CODEC_KEYS is not"):
        load_settings()
    monkeypatch.delenv("SAGAFLOW_CODEC_KEY_ID")
    monkeypatch.setenv("SAGAFLOW_CODEC_KEYS", f"k1:{b64(K1)},k1:{b64(K2)}")
    with pytest.raises(SettingsError, match="SAGAFLOW_CODEC_KEYS: key id 'k1' is listed twice"):
        load_settings()


def test_the_keys_never_show_in_sagaflow_settings() -> None:
    settings = load_settings(codec_keys=f"k1:{b64(K1)}")
    assert b64(K1) not in str(settings.codec_keys) and b64(K1) not in repr(settings)


def test_cors_origins_default_to_the_web_ui_s_origin() -> None:
    settings = load_settings(temporal_ui_url="http://127.0.0.1:8233/namespaces/default")
    assert settings.codec_origins == ["http://127.0.0.1:8233"]
    listed = load_settings(codec_cors_origins="https://ui.example.com/, http://a:1")
    assert listed.codec_origins == ["https://ui.example.com", "http://a:1"]


def test_the_dev_server_s_web_ui_gets_the_api_s_codec_endpoint_when_the_codec_is_on(
    tmp_path: Path,
) -> None:
    from sagaflow.services.temporal import TemporalService

    def argv(**overrides: object) -> list[str]:
        service = TemporalService(load_settings(data_dir=tmp_path, **overrides))
        service.prepare()
        return service._argv

    keys = f"k1:{b64(K1)}"
    assert "--ui-codec-endpoint" not in argv(api_port=8123)
    on = list(itertools.pairwise(argv(codec_keys=keys, api_host="0.0.0.0", api_port=8123)))
    assert ("--ui-codec-endpoint", "http://127.0.0.1:8123/codec") in on
    # API port unknown at server start (0 = free port): only the explicit setting helps.
    assert "--ui-codec-endpoint" not in argv(codec_keys=keys, api_port=0)
    explicit = argv(codec_keys=keys, api_port=0, codec_endpoint="https://api.example/codec/")
    assert ("--ui-codec-endpoint", "https://api.example/codec") in itertools.pairwise(explicit)
