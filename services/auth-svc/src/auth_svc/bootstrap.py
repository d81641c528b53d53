"""``auth-svc bootstrap``: the first platform operator and accounting office of a fresh installation.

Passwords come from the environment (``AUTH_BOOTSTRAP_OPERATOR_PASSWORD``, ``AUTH_BOOTSTRAP_ADMIN_PASSWORD``) or
an interactive prompt, and are never printed. Run ``auth-svc migrate`` first. Safe to run again: what exists is
reused, and existing users keep their passwords.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import Any

from auth_svc.clock import system_clock
from auth_svc.db import messaging_tables
from auth_svc.roles import OrgKind, Role
from auth_svc.settings import SCHEMA, SERVICE_NAME, AuthSettings
from auth_svc.wiring import AuthService
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox
from platform_common.problems import Problem

OPERATOR_PASSWORD_ENV = "AUTH_BOOTSTRAP_OPERATOR_PASSWORD"  # noqa: S105  # a variable name
ADMIN_PASSWORD_ENV = "AUTH_BOOTSTRAP_ADMIN_PASSWORD"  # noqa: S105  # a variable name


def _password(env: str, who: str) -> str:
    value = os.environ.get(env)
    if value:
        return value
    if not sys.stdin.isatty():
        raise SystemExit(f"set {env} or run interactively to be asked for the {who} password")
    first = getpass.getpass(f"Password for the {who}: ")
    if first != getpass.getpass("Again: "):
        raise SystemExit("the passwords differ")
    return first


async def bootstrap(
    settings: AuthSettings,
    *,
    operator_email: str,
    operator_password: str,
    office_name: str,
    office_nip: str | None = None,
    admin_email: str | None = None,
    admin_password: str | None = None,
) -> dict[str, Any]:
    db = Database(settings.db, SCHEMA)
    try:
        service = AuthService(db.sessionmaker, Outbox(messaging_tables, SERVICE_NAME), settings, clock=system_clock)
        operator_id, operator_created = await service.members.ensure_user(
            operator_email, operator_password, None, Role.OPS
        )
        office_id = await service.organisations.ensure(OrgKind.OFFICE, office_name, office_nip)
        result: dict[str, Any] = {
            "operator_user_id": str(operator_id),
            "operator_created": operator_created,
            "office_id": str(office_id),
        }
        if admin_email:
            assert admin_password is not None
            admin_id, admin_created = await service.members.ensure_user(
                admin_email, admin_password, office_id, Role.OFFICE_ADMIN
            )
            result |= {"office_admin_user_id": str(admin_id), "office_admin_created": admin_created}
        result["signing_key"] = (await service.keys.current()).kid
        return result
    finally:
        await db.dispose()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="auth-svc bootstrap", description=__doc__)
    parser.add_argument("--operator-email", required=True)
    parser.add_argument("--office-name", required=True)
    parser.add_argument("--office-nip", help="the office's own NIP (checked)")
    parser.add_argument("--admin-email", help="also create the office's first administrator")
    args = parser.parse_args(argv)
    operator_password = _password(OPERATOR_PASSWORD_ENV, "operator")
    admin_password = _password(ADMIN_PASSWORD_ENV, "office administrator") if args.admin_email else None
    try:
        result = asyncio.run(
            bootstrap(
                AuthSettings(),
                operator_email=args.operator_email,
                operator_password=operator_password,
                office_name=args.office_name,
                office_nip=args.office_nip,
                admin_email=args.admin_email,
                admin_password=admin_password,
            )
        )
    except Problem as exc:
        raise SystemExit(f"bootstrap failed: {exc.title}{': ' + exc.detail if exc.detail else ''}") from None
    print(json.dumps(result, indent=2))
