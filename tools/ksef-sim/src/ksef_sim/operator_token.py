"""The token that guards the operator API (``/_sim``): whoever holds it can move KSeF's clock, cause outages and
fill the store, so it is never optional.

Taken from ``KSEF_SIM_OPERATOR_TOKEN`` when set; otherwise read from a file (``KSEF_SIM_OPERATOR_TOKEN_FILE``, by
default next to the state file: ``ksef-sim.sqlite3`` → ``ksef-sim.operator-token``). When the file does not exist
yet, a random token is written to it (created exclusively with mode 0600) and printed once; later starts read it
and print nothing. An in-memory simulator (no state file) makes a new token on every start and prints it.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from ksef_sim.settings import SimSettings

TOKEN_FILE_SUFFIX = ".operator-token"
TOKEN_BYTES = 32


class OperatorTokenError(RuntimeError):
    pass


def token_file(settings: SimSettings) -> Path | None:
    """Where the token lives when it is not given directly (``None``: in-memory simulator, token in memory)."""
    if settings.operator_token_file is not None:
        return settings.operator_token_file
    if settings.database_path is not None:
        return settings.database_path.with_suffix(TOKEN_FILE_SUFFIX)
    return None


def _announce(message: str) -> None:
    # Printed, not logged: log pipelines keep and ship what they get, and the token must not end up there.
    print(message, file=sys.stdout, flush=True)


def resolve_operator_token(settings: SimSettings, announce: Callable[[str], None] = _announce) -> SecretStr:
    if settings.operator_token is not None:
        return settings.operator_token
    path = token_file(settings)
    if path is None:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        announce(f"KSeF simulator operator token (in memory, for this run only): {token}")
        return SecretStr(token)
    existing = _read(path)
    if existing is not None:
        return existing
    token = secrets.token_urlsafe(TOKEN_BYTES)
    if not _create(path, token):
        # Another process created it between our read and our create: its token is the one.
        raced = _read(path)
        if raced is None:
            raise OperatorTokenError(f"the operator token file {path} vanished while starting")
        return raced
    announce(
        f"KSeF simulator operator token (send it as 'Authorization: Bearer <token>' to /_sim; saved in {path}, "
        f"shown only this once): {token}"
    )
    return SecretStr(token)


def _read(path: Path) -> SecretStr | None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise OperatorTokenError(f"the operator token file {path} is not a regular file")
    if info.st_mode & 0o077:
        # Left readable by others (copied, restored from a backup): only the owner may read a credential.
        path.chmod(0o600)
    token = path.read_text(encoding="ascii").strip()
    if not token:
        raise OperatorTokenError(f"the operator token file {path} is empty: delete it to have a new token made")
    return SecretStr(token)


def _create(path: Path, token: str) -> bool:
    """Write the token to a new file readable by its owner only; False when the file exists already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: never overwrite (nor follow a link planted at) the path; the mode applies at creation, so the
        # token is not readable by others at any moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True
