"""The KSeF cipher suite as the simulator implements it (REFERENCE.md §3.2, §3.10, §4)."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ksef_sim.crypto import (
    KSEF_TOKEN_ENCRYPTION,
    SYMMETRIC_KEY_ENCRYPTION,
    DecryptionError,
    MinistryKeys,
    aes_cbc_decrypt,
    aes_cbc_encrypt,
    rsa_oaep_encrypt,
)
from ksef_sim.domain.auth import ms_since_epoch, truncate_to_ms
from ksef_sim.store import Store

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def keys() -> MinistryKeys:
    return MinistryKeys.load_or_create(Store(None), NOW)


def test_rsa_oaep_round_trip_with_the_published_certificate(keys: MinistryKeys) -> None:
    key = keys.for_usage(KSEF_TOKEN_ENCRYPTION)
    plaintext = b"20260301-EC-0123456789-ABCDEF0123-45|nip-5265877635|" + b"a" * 64 + b"|1772366400000"
    ciphertext = rsa_oaep_encrypt(key.certificate_der_b64, plaintext)
    assert len(ciphertext) == 256  # RSA-2048
    assert key.decrypt(ciphertext) == plaintext


def test_ciphertext_for_the_other_key_does_not_decrypt(keys: MinistryKeys) -> None:
    token_key = keys.for_usage(KSEF_TOKEN_ENCRYPTION)
    other = keys.for_usage(SYMMETRIC_KEY_ENCRYPTION)
    ciphertext = rsa_oaep_encrypt(other.certificate_der_b64, b"secret")
    with pytest.raises(DecryptionError):
        token_key.decrypt(ciphertext)


def test_public_key_id_is_b64_sha256_of_the_spki(keys: MinistryKeys) -> None:
    for key in keys.all():
        cert = x509.load_der_x509_certificate(base64.b64decode(key.certificate_der_b64))
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        expected = base64.b64encode(hashlib.sha256(spki).digest()).decode()
        assert key.public_key_id == expected
        assert len(expected) == 44  # the spec's publicKeyId length


def test_resolve_rejects_ids_of_another_usage_and_unknown_ids(keys: MinistryKeys) -> None:
    token_key = keys.for_usage(KSEF_TOKEN_ENCRYPTION)
    symmetric = keys.for_usage(SYMMETRIC_KEY_ENCRYPTION)
    assert keys.resolve(KSEF_TOKEN_ENCRYPTION, None) is token_key
    assert keys.resolve(KSEF_TOKEN_ENCRYPTION, token_key.public_key_id) is token_key
    assert keys.resolve(KSEF_TOKEN_ENCRYPTION, symmetric.public_key_id) is None
    assert keys.resolve(KSEF_TOKEN_ENCRYPTION, base64.b64encode(b"\0" * 32).decode()) is None


def test_keys_survive_a_reload_from_the_store() -> None:
    store = Store(None)
    first = MinistryKeys.load_or_create(store, NOW)
    again = MinistryKeys.load_or_create(store, NOW)
    assert [k.public_key_id for k in again.all()] == [k.public_key_id for k in first.all()]


def test_aes_cbc_round_trip_without_prefixed_iv() -> None:
    key, iv = os.urandom(32), os.urandom(16)
    plaintext = "<Faktura>zażółć gęślą jaźń</Faktura>".encode()
    ciphertext = aes_cbc_encrypt(key, iv, plaintext)
    assert len(ciphertext) % 16 == 0
    assert aes_cbc_decrypt(key, iv, ciphertext) == plaintext


def test_aes_cbc_bad_padding_is_a_decryption_error() -> None:
    # Fixed bytes, not random ones: a random wrong key (or tampered byte) ends in valid PKCS#7 padding about once
    # in 256 runs (a final 0x01 byte), so the test would fail by chance. These decrypt to invalid padding.
    key, iv, wrong = bytes(range(32)), bytes(range(16)), bytes(range(1, 33))
    ciphertext = aes_cbc_encrypt(key, iv, b"x" * 20)
    with pytest.raises(DecryptionError):
        aes_cbc_decrypt(wrong, iv, ciphertext)  # wrong key: garbage padding
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0xFF])
    with pytest.raises(DecryptionError):
        aes_cbc_decrypt(key, iv, tampered)


def test_aes_cbc_rejects_wrong_lengths() -> None:
    with pytest.raises(DecryptionError):
        aes_cbc_decrypt(os.urandom(16), os.urandom(16), b"\0" * 16)  # AES-128 key
    with pytest.raises(DecryptionError):
        aes_cbc_decrypt(os.urandom(32), os.urandom(16), b"\0" * 15)


@pytest.mark.parametrize("micro", [0, 999, 124000, 999999])
def test_challenge_milliseconds_match_the_truncated_timestamp(micro: int) -> None:
    instant = truncate_to_ms(NOW.replace(microsecond=micro))
    assert ms_since_epoch(instant) == int(NOW.timestamp()) * 1000 + micro // 1000
    assert instant.microsecond % 1000 == 0
