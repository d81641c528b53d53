from __future__ import annotations

import base64
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from platform_common.sealing import (
    SealingError,
    ensure_private_key_file,
    generate_keypair,
    public_key_of,
    read_private_key_file,
    seal,
    unseal,
)

SECRET = b"https://hub.example/invitations/accept?token=Zq3vN0s-very-secret-token"
INFO = b"user.invited"


def _raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TestKeys:
    def test_a_keypair_is_two_raw_x25519_keys_in_urlsafe_base64(self) -> None:
        private, public = generate_keypair()

        assert len(_raw(private)) == 32
        assert len(_raw(public)) == 32
        assert private != public
        assert public_key_of(private) == public
        assert generate_keypair()[0] != private

    @pytest.mark.parametrize("key", ["", "c2hvcnQ", "not base64 at all!", "A" * 44])
    def test_a_malformed_private_key_is_refused(self, key: str) -> None:
        _, public = generate_keypair()
        sealed = seal(public, SECRET, info=INFO)

        with pytest.raises(SealingError):
            unseal(key, sealed, info=INFO)

    def test_a_low_order_public_key_is_refused(self) -> None:
        with pytest.raises(SealingError):
            seal(base64.urlsafe_b64encode(bytes(32)).decode(), SECRET, info=INFO)


class TestSealing:
    def test_round_trip(self) -> None:
        private, public = generate_keypair()

        sealed = seal(public, SECRET, info=INFO)

        assert unseal(private, sealed, info=INFO) == SECRET

    def test_the_compact_text_is_versioned_json_and_url_safe_and_fresh_each_time(self) -> None:
        _, public = generate_keypair()

        first, second = seal(public, SECRET, info=INFO), seal(public, SECRET, info=INFO)

        assert first.startswith("hpke1.")
        assert set(first[len("hpke1.") :]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert first != second

    def test_the_output_never_contains_the_plaintext(self) -> None:
        _, public = generate_keypair()
        token = b"Zq3vN0s-very-secret-token"

        sealed = seal(public, SECRET, info=INFO)

        decoded = _raw(sealed[len("hpke1.") :])
        for form in (token, base64.urlsafe_b64encode(token).rstrip(b"="), base64.b64encode(token).rstrip(b"=")):
            assert form not in sealed.encode()
            assert form not in decoded

    def test_another_key_cannot_open_it(self) -> None:
        _, public = generate_keypair()
        other_private, _ = generate_keypair()
        sealed = seal(public, SECRET, info=INFO)

        with pytest.raises(SealingError):
            unseal(other_private, sealed, info=INFO)

    def test_a_text_sealed_for_one_purpose_cannot_be_opened_for_another(self) -> None:
        private, public = generate_keypair()
        sealed = seal(public, SECRET, info=b"user.invited")

        with pytest.raises(SealingError):
            unseal(private, sealed, info=b"user.password_reset_requested")

    def test_any_altered_byte_is_detected(self) -> None:
        private, public = generate_keypair()
        sealed = seal(public, SECRET, info=INFO)
        body = bytearray(_raw(sealed[len("hpke1.") :]))

        for index in (0, 31, 32, len(body) // 2, len(body) - 1):
            tampered = bytearray(body)
            tampered[index] ^= 0x01
            text = "hpke1." + base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
            with pytest.raises(SealingError):
                unseal(private, text, info=INFO)

    @pytest.mark.parametrize(
        "mangle", [lambda s: s[:-4], lambda s: s[:20], lambda s: "hpke2." + s[6:], lambda s: s[6:]]
    )
    def test_a_truncated_or_unknown_format_is_refused(self, mangle: Callable[[str], str]) -> None:
        private, public = generate_keypair()
        sealed = seal(public, SECRET, info=INFO)

        with pytest.raises(SealingError):
            unseal(private, mangle(sealed), info=INFO)


class TestKeyFiles:
    def test_a_missing_key_file_is_created_owner_only_and_read_back(self, tmp_path: Path) -> None:
        path = tmp_path / "keys" / "notify-seal.key"

        first = ensure_private_key_file(path)

        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert ensure_private_key_file(path) == first
        assert read_private_key_file(path) == first
        assert unseal(first, seal(public_key_of(first), SECRET, info=INFO), info=INFO) == SECRET

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
    def test_a_key_file_others_can_read_is_refused(self, tmp_path: Path, mode: int) -> None:
        path = tmp_path / "notify-seal.key"
        ensure_private_key_file(path)
        path.chmod(mode)

        with pytest.raises(SealingError, match="readable by group or others"):
            read_private_key_file(path)
        with pytest.raises(SealingError):
            ensure_private_key_file(path)

    def test_a_missing_or_malformed_key_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "notify-seal.key"
        with pytest.raises(SealingError):
            read_private_key_file(path)
        path.write_text("not a key\n")
        path.chmod(0o600)
        with pytest.raises(SealingError):
            read_private_key_file(path)
