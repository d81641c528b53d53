"""The API key format: one parser for every service (``platform_common.auth.api_keys``)."""

from __future__ import annotations

import math

import pytest

from platform_common.auth.api_keys import (
    ALPHABET,
    API_KEY_LENGTH,
    API_KEY_PREFIX,
    SECRET_LENGTH,
    InvalidApiKey,
    ParsedApiKey,
    format_api_key,
    looks_like_api_key,
    new_api_key,
    parse_api_key,
)

KEYS = [new_api_key() for _ in range(20)]


class TestFormat:
    def test_round_trip(self) -> None:
        for parsed, text in KEYS:
            assert parse_api_key(text) == parsed
            assert format_api_key(parsed.key_id, parsed.secret) == text == parsed.text
            assert looks_like_api_key(text)

    def test_prefix_length_and_alphabet_are_fixed(self) -> None:
        for parsed, text in KEYS:
            assert text.startswith(API_KEY_PREFIX) and len(text) == API_KEY_LENGTH
            assert text.count("_") == 2  # the prefix's and the one after the key id
            assert "_" not in parsed.secret and "_" not in parsed.key_id
            assert text.split("_") == ["khk", parsed.key_id, text[-(SECRET_LENGTH + 6) :]]
            assert set(parsed.key_id + parsed.secret) <= set(ALPHABET)

    def test_the_secret_carries_at_least_160_bits(self) -> None:
        assert SECRET_LENGTH * math.log2(len(ALPHABET)) >= 160
        assert len({parsed.secret for parsed, _ in KEYS}) == len(KEYS)

    def test_the_secret_never_shows_in_a_repr_or_an_error(self) -> None:
        parsed, text = KEYS[0]
        assert parsed.secret not in repr(parsed)
        with pytest.raises(InvalidApiKey) as caught:
            parse_api_key(text[:-1])
        assert parsed.secret not in str(caught.value) and text[:-1] not in repr(caught.value)


class TestDamagedKeys:
    @pytest.mark.parametrize(("parsed", "text"), KEYS[:3])
    def test_every_single_character_typo_is_detected(self, parsed: ParsedApiKey, text: str) -> None:
        checked = 0
        for i in range(len(text)):
            for c in ALPHABET + "_-.":
                if c == text[i]:
                    continue
                typo = text[:i] + c + text[i + 1 :]
                with pytest.raises(InvalidApiKey):
                    parse_api_key(typo)
                checked += 1
        assert checked > len(text) * len(ALPHABET) - len(text)

    def test_substitutions_inside_the_alphabet_fail_the_checksum(self) -> None:
        _parsed, text = KEYS[0]
        start = len(API_KEY_PREFIX)
        for i in range(start, len(text)):
            if text[i] == "_":
                continue
            c = "A" if text[i] != "A" else "B"
            with pytest.raises(InvalidApiKey) as caught:
                parse_api_key(text[:i] + c + text[i + 1 :])
            assert caught.value.reason == "checksum"

    def test_every_truncation_and_extension_is_detected(self) -> None:
        for _parsed, text in KEYS[:5]:
            for n in range(len(text)):
                with pytest.raises(InvalidApiKey, match="malformed"):
                    parse_api_key(text[:n])
            for extra in ("0", "_", " "):
                with pytest.raises(InvalidApiKey, match="malformed"):
                    parse_api_key(text + extra)

    def test_swapped_neighbours_are_detected(self) -> None:
        _parsed, text = KEYS[0]
        for i in range(len(API_KEY_PREFIX), len(text) - 1):
            if text[i] == text[i + 1]:
                continue
            swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
            with pytest.raises(InvalidApiKey):
                parse_api_key(swapped)

    @pytest.mark.parametrize(
        "text",
        ["", "khk_", "khk_abc_def", "KHK_" + "a" * (API_KEY_LENGTH - 4), "eyJhbGciOi.x.y", "khk_" + "é" * 49],
    )
    def test_other_shapes_are_malformed(self, text: str) -> None:
        with pytest.raises(InvalidApiKey) as caught:
            parse_api_key(text)
        assert caught.value.reason == "malformed"

    def test_formatting_refuses_parts_of_the_wrong_shape(self) -> None:
        parsed, _text = KEYS[0]
        for key_id, secret in ((parsed.key_id + "x", parsed.secret), (parsed.key_id, parsed.secret[:-1] + "_")):
            with pytest.raises(InvalidApiKey):
                format_api_key(key_id, secret)
