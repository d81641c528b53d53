"""The problem documents several capabilities answer with (RFC 7807, ``platform_common.problems.Problem``)."""

from __future__ import annotations

from platform_common.problems import Problem


def not_found(what: str = "Resource") -> Problem:
    return Problem(404, "Not Found", f"{what} not found.", code="not-found")


def forbidden(detail: str = "You are not allowed to do this.") -> Problem:
    return Problem(403, "Forbidden", detail, code="forbidden")


def invalid_credentials() -> Problem:
    # One answer for unknown e-mail, wrong password, wrong code and locked account: no account enumeration,
    # and a locked account does not tell a guesser that the password was right.
    return Problem(401, "Unauthorized", "Invalid e-mail, password or one-time code.", code="invalid-credentials")


def invalid_token() -> Problem:
    return Problem(401, "Unauthorized", "The token is invalid or expired.", code="invalid-token")
