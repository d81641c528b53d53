"""Envelope encryption of stored credentials, master keys from configuration or a local key file."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from ksef_gateway.settings import GatewaySettings, VaultSettings
from ksef_gateway.vault.envelope import (
    Envelope,
    EnvelopeError,
    Keyring,
    MasterKey,
    UnknownMasterKey,
    open_envelope,
    rewrap,
    seal,
)
from ksef_gateway.vault.keys import VaultConfigurationError, load_keyring

SECRET = b"20261201-EC-0123456789-ABCDEF0123-45|nip-5265877635|" + b"ab" * 32
AAD = b"credential=1|nip=5265877635"


def _keyring(*ids: str, active: str | None = None) -> Keyring:
    keys = [MasterKey.generate(i) for i in ids]
    return Keyring(keys, active or ids[0])


class TestEnvelope:
    def test_round_trip_and_the_ciphertext_is_not_the_secret(self) -> None:
        keyring = _keyring("k1")
        sealed = seal(keyring, SECRET, AAD)
        assert sealed.master_key_id == "k1"
        assert SECRET not in sealed.ciphertext and SECRET not in sealed.wrapped_key
        assert open_envelope(keyring, sealed, AAD) == SECRET
        # A fresh data key and nonce every time: the same secret never gives the same bytes.
        assert seal(keyring, SECRET, AAD).ciphertext != sealed.ciphertext

    @pytest.mark.parametrize("part", ["ciphertext", "wrapped_key"])
    def test_any_flipped_bit_is_detected(self, part: str) -> None:
        keyring = _keyring("k1")
        sealed = seal(keyring, SECRET, AAD)
        raw = bytearray(getattr(sealed, part))
        raw[len(raw) // 2] ^= 0x01
        tampered = Envelope(**{**sealed.__dict__, part: bytes(raw)})
        with pytest.raises(EnvelopeError):
            open_envelope(keyring, tampered, AAD)

    def test_associated_data_binds_the_row(self) -> None:
        keyring = _keyring("k1")
        sealed = seal(keyring, SECRET, AAD)
        with pytest.raises(EnvelopeError):
            open_envelope(keyring, sealed, b"credential=1|nip=7352765225")  # copied to another NIP
        with pytest.raises(EnvelopeError):
            open_envelope(keyring, sealed, b"credential=2|nip=5265877635")  # another row of the same NIP

    def test_wrapped_keys_cannot_be_swapped_between_rows_or_relabelled(self) -> None:
        keyring = _keyring("k1", "k2")
        first, second = seal(keyring, SECRET, AAD), seal(keyring, b"other secret", b"credential=2|nip=7352765225")
        with pytest.raises(EnvelopeError):
            open_envelope(keyring, Envelope(first.ciphertext, second.wrapped_key, "k1"), AAD)
        with pytest.raises(EnvelopeError):
            open_envelope(keyring, Envelope(first.ciphertext, first.wrapped_key, "k2"), AAD)

    def test_rotation_rewraps_the_data_key_and_the_old_key_can_retire(self) -> None:
        old = MasterKey.generate("old")
        new = MasterKey.generate("new")
        sealed = seal(Keyring([old], "old"), SECRET, AAD)
        during = Keyring([old, new], "new")
        # Until the rotation reaches it, the row still opens with the old key.
        assert open_envelope(during, sealed, AAD) == SECRET
        rotated = rewrap(during, sealed, AAD)
        assert rotated.master_key_id == "new" and rotated.ciphertext == sealed.ciphertext
        retired = Keyring([new], "new")
        assert open_envelope(retired, rotated, AAD) == SECRET
        with pytest.raises(UnknownMasterKey):
            open_envelope(retired, sealed, AAD)

    def test_rewrap_refuses_a_tampered_secret(self) -> None:
        keyring = _keyring("old", "new", active="new")
        sealed = seal(Keyring([keyring.get("old")], "old"), SECRET, AAD)
        broken = Envelope(sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1]), sealed.wrapped_key, "old")
        with pytest.raises(EnvelopeError):
            rewrap(keyring, broken, AAD)

    def test_key_material_never_shows_in_repr(self) -> None:
        key = MasterKey.generate("k1")
        keyring = Keyring([key], "k1")
        assert key.to_base64() not in repr(key) + repr(keyring)
        assert str(key.material) not in repr(key)


class TestConfiguredKeys:
    def test_json_map_from_the_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
        monkeypatch.setenv("GATEWAY_VAULT__MASTER_KEYS", json.dumps({"2026-11": k1, "2026-12": k2}))
        monkeypatch.setenv("GATEWAY_VAULT__ACTIVE_KEY_ID", "2026-12")
        settings = GatewaySettings()
        keyring = load_keyring(settings.vault, environment="production", data_dir=tmp_path)
        assert keyring.active_key_id == "2026-12"
        assert keyring.key_ids == {"2026-11", "2026-12"}
        assert base64.b64encode(keyring.get("2026-11").material).decode() == k1
        assert not list(tmp_path.iterdir()), "configured keys must not write a key file"
        assert k1 not in repr(settings) and k2 not in repr(settings)

    def test_one_key_needs_no_active_id(self, tmp_path: Path) -> None:
        key = base64.b64encode(os.urandom(32)).decode()
        keyring = load_keyring(VaultSettings(master_keys={"only": key}), environment="production", data_dir=tmp_path)
        assert keyring.active_key_id == "only"

    @pytest.mark.parametrize(
        ("keys", "active", "message"),
        [
            ({"a": "k", "b": "k"}, None, "set GATEWAY_VAULT__ACTIVE_KEY_ID"),
            ({"a": "k"}, "b", "names a key"),
            ({}, "a", "MASTER_KEYS is empty"),
        ],
    )
    def test_inconsistent_settings_are_refused(self, keys: dict[str, str], active: str | None, message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            VaultSettings(master_keys=keys, active_key_id=active)

    @pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
    def test_a_key_must_be_32_bytes_of_base64(self, value: str, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="master key 'k'"):
            load_keyring(VaultSettings(master_keys={"k": value}), environment="development", data_dir=tmp_path)

    def test_production_refuses_to_start_without_keys(self, tmp_path: Path) -> None:
        with pytest.raises(VaultConfigurationError, match="GATEWAY_VAULT__MASTER_KEYS"):
            load_keyring(VaultSettings(), environment="production", data_dir=tmp_path)
        assert not list(tmp_path.iterdir())


class TestLocalKeyFile:
    def test_generated_once_with_0600_and_reused(self, tmp_path: Path) -> None:
        first = load_keyring(VaultSettings(), environment="development", data_dir=tmp_path / "data")
        path = tmp_path / "data" / "ksef-gateway-vault-keys.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        again = load_keyring(VaultSettings(), environment="development", data_dir=tmp_path / "data")
        assert again.active_key_id == first.active_key_id
        sealed = seal(first, SECRET, AAD)
        assert open_envelope(again, sealed, AAD) == SECRET
