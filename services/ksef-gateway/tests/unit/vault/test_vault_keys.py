"""Where the vault's master keys come from: the environment, a mounted file, or (embedded mode) a generated file
in the data folder; any key file that others could read, or that belongs to another user, stops the start."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ksef_gateway.settings import GatewaySettings, VaultSettings
from ksef_gateway.vault.envelope import MasterKey, open_envelope, seal
from ksef_gateway.vault.keys import VaultConfigurationError, load_keyring

AAD = b"credential=1|nip=5260250274"


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _mounted(path: Path, body: object, mode: int = 0o400) -> Path:
    path.write_text(json.dumps(body))
    path.chmod(mode)
    return path


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


class TestMountedKeyFile:
    def test_the_env_var_names_a_mounted_file_outside_the_data_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        k1, k2 = _key(), _key()
        (tmp_path / "secrets").mkdir()
        secret = _mounted(tmp_path / "secrets" / "vault-keys.json", {"2026-11": k1, "2026-12": k2})
        monkeypatch.setenv("GATEWAY_VAULT__MASTER_KEYS_FILE", str(secret))
        monkeypatch.setenv("GATEWAY_VAULT__ACTIVE_KEY_ID", "2026-12")
        # Production settings want PostgreSQL; nothing connects to it here.
        monkeypatch.setenv("GATEWAY_DB__URL", "postgresql+asyncpg://gateway@127.0.0.1:1/gateway")
        settings = GatewaySettings(environment="production")
        data_dir = tmp_path / "data"

        keyring = load_keyring(settings.vault, environment="production", data_dir=data_dir)

        assert keyring.active_key_id == "2026-12" and keyring.key_ids == {"2026-11", "2026-12"}
        only_old = load_keyring(VaultSettings(master_keys={"2026-11": k1}), environment="production", data_dir=data_dir)
        old = seal(only_old, b"s", AAD)
        assert open_envelope(keyring, old, AAD) == b"s"  # the older key still decrypts
        assert not data_dir.exists()  # nothing generated in the data folder

    def test_a_moved_generated_file_works_as_a_mounted_one(self, tmp_path: Path) -> None:
        generated = load_keyring(VaultSettings(), environment="development", data_dir=tmp_path / "data")
        moved = tmp_path / "mounted.json"
        (tmp_path / "data" / "ksef-gateway-vault-keys.json").rename(moved)

        keyring = load_keyring(VaultSettings(master_keys_file=moved), environment="production", data_dir=tmp_path)

        assert keyring.active_key_id == generated.active_key_id

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o440])
    def test_a_file_that_group_or_others_may_read_is_refused(self, tmp_path: Path, mode: int) -> None:
        path = _mounted(tmp_path / "keys.json", {"k": _key()}, mode)
        with pytest.raises(VaultConfigurationError, match=f"mode {mode:04o}"):
            load_keyring(VaultSettings(master_keys_file=path), environment="production", data_dir=tmp_path)

    def test_a_file_of_another_user_is_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = _mounted(tmp_path / "keys.json", {"k": _key()}, 0o600)
        if os.geteuid() == 0:
            os.chown(path, 4242, -1)  # root may read any file, so the test hands it to someone else
        else:
            monkeypatch.setattr("ksef_gateway.vault.keys.os.geteuid", lambda: path.stat().st_uid + 1)
        with pytest.raises(VaultConfigurationError, match="belongs to user"):
            load_keyring(VaultSettings(master_keys_file=path), environment="production", data_dir=tmp_path)

    def test_a_missing_file_is_a_clear_start_up_error(self, tmp_path: Path) -> None:
        with pytest.raises(VaultConfigurationError, match="cannot be read"):
            load_keyring(
                VaultSettings(master_keys_file=tmp_path / "absent.json"), environment="production", data_dir=tmp_path
            )

    def test_the_env_var_and_the_file_together_are_ambiguous(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="not both"):
            VaultSettings(master_keys={"k": _key()}, master_keys_file=tmp_path / "keys.json")


class TestGeneratedKeyFile:
    @pytest.mark.usefixtures("permissive_umask")
    def test_created_0600_even_under_a_permissive_umask_and_nothing_left_behind(self, tmp_path: Path) -> None:
        load_keyring(VaultSettings(), environment="development", data_dir=tmp_path)

        assert [p.name for p in tmp_path.iterdir()] == ["ksef-gateway-vault-keys.json"]
        assert stat.S_IMODE((tmp_path / "ksef-gateway-vault-keys.json").stat().st_mode) == 0o600

    def test_a_generated_file_made_readable_by_others_stops_the_start(self, tmp_path: Path) -> None:
        load_keyring(VaultSettings(), environment="development", data_dir=tmp_path)
        (tmp_path / "ksef-gateway-vault-keys.json").chmod(0o644)

        with pytest.raises(VaultConfigurationError, match="group and others"):
            load_keyring(VaultSettings(), environment="development", data_dir=tmp_path)

    def test_an_existing_key_file_is_read_not_replaced(self, tmp_path: Path) -> None:
        existing = MasterKey.generate("existing")
        path = tmp_path / "ksef-gateway-vault-keys.json"
        _mounted(path, {"active_key_id": "existing", "master_keys": {"existing": existing.to_base64()}}, 0o600)

        assert load_keyring(VaultSettings(), environment="development", data_dir=tmp_path).active_key_id == "existing"
