"""notify-svc's sealing key: configured once, refused when unsafe, never echoed."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pydantic
import pytest

from notify_svc.mail import consumers as mail
from notify_svc.main import DEFINITION, run
from notify_svc.settings import NotifySettings
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import ensure_private_key_file, generate_keypair, public_key_of


def _settings(**env: str) -> NotifySettings:
    with mock.patch.dict(os.environ, env, clear=True):
        return NotifySettings()


class TestSealKey:
    def test_the_key_comes_from_the_variable(self) -> None:
        private, _ = generate_keypair()

        key = _settings(NOTIFY_SEAL_PRIVATE_KEY=private).seal_key()

        assert key is not None and key.get_secret_value() == private

    def test_the_key_comes_from_an_owner_only_file(self, tmp_path: Path) -> None:
        private = ensure_private_key_file(tmp_path / "seal.key")

        key = _settings(NOTIFY_SEAL_KEY_FILE=str(tmp_path / "seal.key")).seal_key()

        assert key is not None and key.get_secret_value() == private

    def test_a_key_file_readable_by_others_refuses_to_start(self, tmp_path: Path) -> None:
        path = tmp_path / "seal.key"
        ensure_private_key_file(path)
        path.chmod(0o644)

        with pytest.raises(pydantic.ValidationError, match="readable by group or others"):
            _settings(NOTIFY_SEAL_KEY_FILE=str(path))

    def test_a_malformed_key_is_refused_without_being_echoed(self) -> None:
        secret_looking = "c2VjcmV0LWJ1dC10b28tc2hvcnQ"

        with pytest.raises(pydantic.ValidationError) as refused:
            _settings(NOTIFY_SEAL_PRIVATE_KEY=secret_looking)
        assert secret_looking not in str(refused.value)

    def test_both_sources_at_once_are_refused(self, tmp_path: Path) -> None:
        ensure_private_key_file(tmp_path / "seal.key")

        with pytest.raises(pydantic.ValidationError, match="not both"):
            _settings(NOTIFY_SEAL_PRIVATE_KEY=generate_keypair()[0], NOTIFY_SEAL_KEY_FILE=str(tmp_path / "seal.key"))

    def test_production_refuses_to_start_without_a_key_but_migrates(self) -> None:
        production = {
            "NOTIFY_ENVIRONMENT": "production",
            "NOTIFY_DB__URL": "postgresql+asyncpg://notify:x@127.0.0.1:1/ksefhub",
            "NOTIFY_MESSAGING__TRANSPORT": "inprocess",
        }
        settings = _settings(**production)  # `notify-svc migrate` reads these settings and needs no key

        with pytest.raises(RuntimeError, match="NOTIFY_SEAL_PRIVATE_KEY"):
            mail.subscriptions(ServiceRuntime(DEFINITION, settings))
        keyed = _settings(**production, NOTIFY_SEAL_PRIVATE_KEY=generate_keypair()[0])
        assert len(mail.subscriptions(ServiceRuntime(DEFINITION, keyed))) == 4

    def test_development_starts_without_a_key(self) -> None:
        assert _settings().seal_key() is None


def test_seal_keygen_prints_a_matching_pair(capsys: pytest.CaptureFixture[str]) -> None:
    run(["seal-keygen"])

    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert public_key_of(lines["NOTIFY_SEAL_PRIVATE_KEY"]) == lines["AUTH_NOTIFY_PUBLIC_KEY"]
