"""Where the vault's master keys come from, and the refusal of a key file others could read.

In order of precedence:

1. ``GATEWAY_VAULT__MASTER_KEYS``: a JSON map of key id to base64 of 32 random bytes (a Kubernetes Secret through
   ``envFrom``, a compose variable);
2. ``GATEWAY_VAULT__MASTER_KEYS_FILE``: a mounted file with the same JSON map (a Secret volume, a Docker secret),
   or a file in the generated format below; it lives outside the data folder, so a copied or backed-up data folder
   does not carry the key that decrypts it;
3. outside production only: ``<data_dir>/<key_file>``, generated on first start.

``GATEWAY_VAULT__ACTIVE_KEY_ID`` names the key that wraps new credentials (it may be left out with one key). A key
file (mounted or generated) is refused at start-up unless only its owner may read it (no group or other permission
bits) and the owner is this process's user (or root, who can read any file anyway).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ksef_gateway.settings import VaultSettings
from ksef_gateway.vault.envelope import Keyring, MasterKey

log = logging.getLogger(__name__)


class VaultConfigurationError(RuntimeError):
    pass


def load_keyring(settings: VaultSettings, *, environment: str, data_dir: Path) -> Keyring:
    """The configured master keys; outside production, a generated key file when none are configured."""
    if settings.master_keys:
        keys = {key_id: value.get_secret_value() for key_id, value in settings.master_keys.items()}
        return _keyring(keys, settings.active_key_id, "GATEWAY_VAULT__MASTER_KEYS")
    if settings.master_keys_file is not None:
        keys, active = _read_key_file(settings.master_keys_file)
        return _keyring(keys, settings.active_key_id or active, str(settings.master_keys_file))
    if environment == "production":
        raise VaultConfigurationError(
            "production needs configured vault master keys: set GATEWAY_VAULT__MASTER_KEYS (a JSON map of key id "
            "to base64 of 32 random bytes) or GATEWAY_VAULT__MASTER_KEYS_FILE (a mounted file holding that map), "
            "and GATEWAY_VAULT__ACTIVE_KEY_ID"
        )
    return _local_keyring(data_dir / settings.key_file)


def _keyring(keys: dict[str, str], active: str | None, source: str) -> Keyring:
    if not keys:
        raise VaultConfigurationError(f"{source} holds no master key")
    if active is None and len(keys) > 1:
        raise VaultConfigurationError(f"{source} holds several master keys: set GATEWAY_VAULT__ACTIVE_KEY_ID")
    ring = [MasterKey.from_base64(key_id, value) for key_id, value in keys.items()]  # ValueError names the key
    return Keyring(ring, active or ring[0].key_id)


def check_key_file(path: Path) -> None:
    """Refuse a key file that anyone but its owner may read, or that belongs to another user."""
    try:
        info = path.stat()  # follows symlinks: a Secret volume's files are links into its ..data directory
    except OSError as exc:
        raise VaultConfigurationError(f"vault key file {path} cannot be read: {exc.strerror}") from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise VaultConfigurationError(
            f"vault key file {path} has mode {mode:04o}: group and others may access it; make it 0600 or 0400 "
            f"(chmod 600 {path}; on Kubernetes, defaultMode: 0400)"
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise VaultConfigurationError(
            f"vault key file {path} belongs to user {info.st_uid}, not to this process's user {os.geteuid()}"
        )


def _read_key_file(path: Path) -> tuple[dict[str, str], str | None]:
    """The keys and the active key id of a key file: the env var's map, or ``{"active_key_id", "master_keys"}``."""
    check_key_file(path)
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VaultConfigurationError(f"vault key file {path} is not readable JSON ({type(exc).__name__})") from None
    if isinstance(data, dict) and isinstance(data.get("master_keys"), dict):
        active = data.get("active_key_id")
        return {str(k): str(v) for k, v in data["master_keys"].items()}, str(active) if active else None
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}, None
    raise VaultConfigurationError(f"vault key file {path} must hold a JSON map of key id to base64 key")


def _local_keyring(path: Path) -> Keyring:
    """The embedded mode's key: generated on first start into a 0600 file, read back on every later start.

    Losing the file makes every stored credential undecryptable (they must be registered again), which is the
    price of a zero-configuration start; production refuses to run this way.
    """
    if not path.exists():
        _generate_key_file(path)
    keys, active = _read_key_file(path)
    return _keyring(keys, active, str(path))


def _generate_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate(f"local-{datetime.now(UTC):%Y%m%d%H%M%S}")
    body = json.dumps({"active_key_id": key.key_id, "master_keys": {key.key_id: key.to_base64()}}, indent=2)
    # Created 0600 by os.open itself (never a moment at the umask's 0644), written in full under a temporary
    # name, then linked into place: a second process starting at once either wins the link or reads the
    # complete file of the one that did, never a half-written one or a different key.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return
    finally:
        temporary.unlink(missing_ok=True)
    log.warning(
        "generated a local vault master key in %s: fine for the embedded mode, but configure "
        "GATEWAY_VAULT__MASTER_KEYS or GATEWAY_VAULT__MASTER_KEYS_FILE for any shared deployment",
        path,
    )
