"""Rules of membership without I/O: e-mail addresses, roles per kind of organisation, passwords, locks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Row

from auth_svc.roles import OrgKind, Role, role_fits
from platform_common.problems import Problem


def normalize_email(value: str) -> str:
    return value.strip().lower()


def validated_email(value: str) -> str:
    try:
        return normalize_email(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError:
        raise Problem(422, "Invalid e-mail address", code="invalid-email") from None


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise Problem(422, "Unknown role", code="invalid-role", roles=[str(r) for r in Role]) from None


def check_role_fits(role: Role, kind: str) -> None:
    if not role_fits(role, OrgKind(kind)):
        raise Problem(422, "This role does not exist in this kind of organisation", code="invalid-role")


def check_password(password: str, min_length: int) -> None:
    if len(password) < min_length:
        raise Problem(422, "Password too short", f"Use at least {min_length} characters.", code="weak-password")


def is_locked(user: Row[Any], now: datetime) -> bool:
    return user.locked_at is not None and (user.locked_until is None or user.locked_until > now)


def member_view(row: Row[Any], client_ids: list[Any], now: datetime) -> dict[str, Any]:
    locked = is_locked(row, now)
    return {
        "user_id": row.user_id,
        "email": row.email,
        "display_name": row.display_name,
        "role": row.role,
        "restricted": row.restricted,
        "client_ids": client_ids if row.restricted else None,
        "locked": locked,
        "locked_until": row.locked_until if locked else None,
        "failed_logins": row.failed_logins,
        "totp_enabled": row.totp_enabled,
        "member_since": row.member_since,
    }


def notify_public_key(value: str | None) -> str:
    """The key mail links are sealed to; without it no invitation or reset can be mailed (503, nothing stored)."""
    if not value:
        raise Problem(
            503,
            "Mail links are not configured",
            "auth-svc has no AUTH_NOTIFY_PUBLIC_KEY to seal invitation and reset links to notify-svc.",
            code="mail-links-unconfigured",
        )
    return value
