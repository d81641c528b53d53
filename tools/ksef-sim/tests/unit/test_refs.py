from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ksef_sim.refs import (
    KSEF_NUMBER_RE,
    REFERENCE_NUMBER_RE,
    RefType,
    has_valid_checksum,
    ksef_number,
    reference_number,
    with_checksum,
)


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ("5154965572-20260202-010020FC1565", "02"),  # REFERENCE.md §10
        ("5265877635-20250826-0100001AF629", "AF"),
        ("20250514-CR-226FB7B000-3ACF9BE4C0", "10"),  # the spec's challenge example
    ],
)
def test_crc8_matches_the_official_examples(body: str, check: str) -> None:
    assert with_checksum(body) == f"{body}-{check}"


def test_a_changed_character_breaks_the_checksum() -> None:
    assert has_valid_checksum("5154965572-20260202-010020FC1565-02")
    assert not has_valid_checksum("5154965572-20260202-010020FC1566-02")


def test_generated_numbers_have_the_official_shapes() -> None:
    at = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    ref = reference_number(RefType.ONLINE_SESSION, at)
    assert len(ref) == 36
    assert REFERENCE_NUMBER_RE.match(ref)
    assert ref.startswith("20261122-SO-")
    assert has_valid_checksum(ref)
    number = ksef_number("5265877635", at, 42)
    assert len(number) == 35
    assert KSEF_NUMBER_RE.match(number)
    assert has_valid_checksum(number)
    assert ksef_number("5265877635", at, 43) != number
