"""How a service reaches auth-svc and how strictly it checks what auth-svc signed.

The defaults point at the embedded mode's default address (auth-svc mounted at
``http://127.0.0.1:8000/auth``); the embedded runner sets them to the address it actually serves. In the
distributed mode each service sets ``<PREFIX>AUTH__JWKS_URL``, ``<PREFIX>AUTH__INTROSPECTION_URL``,
``<PREFIX>AUTH__TOKEN_URL`` and ``<PREFIX>AUTH__CLIENT_SECRET`` (e.g. ``BUFFER_AUTH__CLIENT_SECRET``).

This module must not import ``platform_common.settings``: that module embeds this section.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

EMBEDDED_AUTH_URL = "http://127.0.0.1:8000/auth"


class AuthClientSettings(BaseModel):
    jwks_url: str = f"{EMBEDDED_AUTH_URL}/.well-known/jwks.json"
    introspection_url: str = f"{EMBEDDED_AUTH_URL}/internal/introspect"
    token_url: str = f"{EMBEDDED_AUTH_URL}/oauth/token"
    issuer: str = "ksef-hub-auth"
    audience: str = "ksef-hub"
    # Client credentials of this service at auth-svc (its service token introspects API keys). The id
    # defaults to the service's name; without a secret the service accepts JWTs only, never API keys.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # The JWKS is kept this long; a token with an unknown key id refetches it at once, but at most once per
    # jwks_min_refetch_s, so tokens with made-up key ids cannot turn into a flood of requests to auth-svc.
    jwks_cache_s: float = Field(default=300.0, ge=0)
    jwks_min_refetch_s: float = Field(default=10.0, ge=0)
    # API key introspection results (active or not) are kept this long: a revoked key stops working within it.
    introspection_cache_s: float = Field(default=30.0, ge=0)
    introspection_cache_size: int = Field(default=10_000, ge=1)
    # Allowed clock skew between auth-svc and this service when checking exp and iat.
    leeway_s: float = Field(default=10.0, ge=0)
    # A service token is replaced this long before it expires.
    service_token_margin_s: float = Field(default=60.0, ge=0)
    timeout_s: float = Field(default=5.0, gt=0)
