"""Verification side of authentication: every service checks auth-svc's JWTs and API keys through this.

See ``dependencies`` for the FastAPI dependencies (``authenticated``, ``require``, ``internal``, ``public``)
and ``platform_common.testing.auth`` for the rule check and a token factory for tests.
"""

from platform_common.auth.authenticator import Authenticator, AuthUnavailable
from platform_common.auth.dependencies import (
    ClientAccessGate,
    CurrentPrincipal,
    authenticated,
    ensure_client,
    ensure_permission,
    get_authenticator,
    install_authenticator,
    install_client_access,
    internal,
    not_found,
    public,
    require,
)
from platform_common.auth.principal import ALL_CLIENTS, Principal
from platform_common.auth.rules import AuthRule, RuleKind
from platform_common.auth.settings import AuthClientSettings
from platform_common.auth.tokens import InvalidToken

__all__ = [
    "ALL_CLIENTS",
    "AuthClientSettings",
    "AuthRule",
    "AuthUnavailable",
    "Authenticator",
    "ClientAccessGate",
    "CurrentPrincipal",
    "InvalidToken",
    "Principal",
    "RuleKind",
    "authenticated",
    "ensure_client",
    "ensure_permission",
    "get_authenticator",
    "install_authenticator",
    "install_client_access",
    "internal",
    "not_found",
    "public",
    "require",
]
