"""Building a batch package (REFERENCE.md §5): the ZIP of the invoices' exact bytes, its size and hash, the binary
split into parts, each part encrypted on its own with the session key; and telling batch sessions from online ones
by their reference number (§2). Decryption is checked with the simulator's own AES code, not ours."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
import zipfile

import pytest

from ksef_gateway.ksef.crypto import CryptoError, SymmetricKey, sha256_b64
from ksef_gateway.sales.batch import MAX_PARTS, archive_name, build_batch, build_zip, is_batch_session, split
from ksef_sim.crypto import aes_cbc_decrypt


def invoices(n: int, *, size: int = 300) -> list[tuple[str, bytes]]:
    # Random bodies do not compress: the archive is about as long as the invoices, so small parts split it.
    return [
        (
            archive_name(uuid.uuid4()),
            b'<?xml version="1.0" encoding="UTF-8"?><Faktura>' + os.urandom(size) + b"</Faktura>",
        )
        for _ in range(n)
    ]


def decrypt(key: SymmetricKey, ciphertext: bytes) -> bytes:
    return aes_cbc_decrypt(key.key, key.iv, ciphertext)


def test_the_archive_is_declared_by_the_size_and_hash_of_the_whole_unencrypted_zip() -> None:
    files = invoices(3)
    key = SymmetricKey.generate()
    batch = build_batch(files, key=key)
    archive = build_zip(files)
    assert batch.file_size == len(archive)
    assert batch.file_hash == base64.b64encode(hashlib.sha256(archive).digest()).decode()
    assert len(batch.file_hash) == 44 and batch.compression_type == "Zip"
    assert batch.key is key
    (part,) = batch.parts
    assert part.ordinal_number == 1 and decrypt(key, part.content) == archive


def test_the_zip_holds_each_invoice_byte_for_byte_under_its_name() -> None:
    files = [*invoices(4), ("x.xml", "<Faktura>zażółć</Faktura>".encode())]
    with zipfile.ZipFile(io.BytesIO(build_zip(files))) as archive:
        assert archive.namelist() == [name for name, _ in files]
        assert all(archive.read(name) == content for name, content in files)


def test_the_same_invoices_and_key_make_the_same_package() -> None:
    files, key = invoices(3), SymmetricKey.generate()
    assert build_batch(files, key=key) == build_batch(files, key=key)


def test_parts_split_the_archive_binary_and_each_decrypts_on_its_own_with_the_session_key() -> None:
    files = invoices(20, size=500)
    key = SymmetricKey.generate()
    batch = build_batch(files, key=key, part_size=1000)
    archive = build_zip(files)
    assert len(batch.parts) == -(-len(archive) // 1000) > 1
    assert [p.ordinal_number for p in batch.parts] == list(range(1, len(batch.parts) + 1))
    plain = [decrypt(key, p.content) for p in batch.parts]
    assert all(len(piece) == 1000 for piece in plain[:-1]) and 0 < len(plain[-1]) <= 1000
    assert b"".join(plain) == archive
    for part, piece in zip(batch.parts, plain, strict=True):
        # AES-CBC with PKCS#7, the IV not prefixed: (n // 16 + 1) * 16 bytes (REFERENCE.md §4).
        assert part.file_size == len(part.content) == (len(piece) // 16 + 1) * 16
        assert part.file_hash == sha256_b64(part.content)
        assert key.decrypt(part.content) == piece
    with zipfile.ZipFile(io.BytesIO(b"".join(plain))) as unpacked:
        assert {name: unpacked.read(name) for name in unpacked.namelist()} == dict(files)


def test_another_key_does_not_open_the_parts() -> None:
    files = invoices(2)
    batch = build_batch(files)
    try:
        plain = SymmetricKey.generate().decrypt(batch.parts[0].content)
    except CryptoError:
        return  # bad padding: the usual outcome
    assert plain != build_zip(files)  # valid padding by chance: garbage all the same


def test_a_fresh_key_per_batch_by_default() -> None:
    files = invoices(2)
    first, second = build_batch(files), build_batch(files)
    assert first.file_hash == second.file_hash  # the same archive ...
    assert first.key != second.key and first.parts[0].content != second.parts[0].content  # ... under another key


def test_what_ksef_would_refuse_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_batch([])
    with pytest.raises(ValueError, match="same name"):
        build_zip([("a.xml", b"<a/>"), ("a.xml", b"<b/>")])
    with pytest.raises(ValueError, match="parts"):
        build_batch(invoices(MAX_PARTS + 1, size=100), part_size=100)


def test_split_cuts_consecutive_pieces() -> None:
    assert split(b"abcdefg", 3) == [b"abc", b"def", b"g"]
    assert split(b"abcdef", 3) == [b"abc", b"def"]
    with pytest.raises(ValueError, match="positive"):
        split(b"abc", 0)


@pytest.mark.parametrize(
    ("reference", "batch"),
    [
        ("20260302-SB-3A1F0C9B21-7E33D1A0F4-5C", True),
        ("20260302-SO-3A1F0C9B21-7E33D1A0F4-5C", False),
        ("20260302-EE-3A1F0C9B21-7E33D1A0F4-5C", False),
        ("SB", False),
        ("", False),
        (None, False),
    ],
)
def test_batch_sessions_are_told_by_their_reference_type(reference: str | None, batch: bool) -> None:
    assert is_batch_session(reference) is batch
