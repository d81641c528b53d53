"""One object per service app that turns a credential into a ``Principal``.

It lives on ``app.state.authenticator`` (``create_service_app`` puts it there) and owns one HTTP client to
auth-svc, created on first use and closed with the app. Tests replace ``clock`` and ``transport`` on it.
"""

from __future__ import annotations

import logging
from datetime import datetime

import httpx

from platform_common.auth.api_keys import InvalidApiKey, looks_like_api_key, parse_api_key
from platform_common.auth.clock import Clock, system_clock
from platform_common.auth.introspection import ApiKeyIntrospector, AuthServiceUnavailable, ServiceTokens
from platform_common.auth.jwks import JwksCache, JwksUnavailable
from platform_common.auth.principal import Principal
from platform_common.auth.settings import AuthClientSettings
from platform_common.auth.tokens import InvalidToken, JwtVerifier

log = logging.getLogger(__name__)


class AuthUnavailable(Exception):
    """The credential cannot be checked right now (auth-svc unreachable or misconfigured): answer 503."""


class Authenticator:
    def __init__(
        self,
        settings: AuthClientSettings,
        *,
        service_name: str,
        clock: Clock = system_clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.transport = transport
        self._client: httpx.AsyncClient | None = None
        now = self._now
        self.jwks = JwksCache(
            settings.jwks_url,
            self.http,
            cache_s=settings.jwks_cache_s,
            min_refetch_s=settings.jwks_min_refetch_s,
            clock=now,
        )
        self.verifier = JwtVerifier(
            self.jwks, issuer=settings.issuer, audience=settings.audience, leeway_s=settings.leeway_s, clock=now
        )
        self.introspector: ApiKeyIntrospector | None = None
        # This service's own bearer for internal calls to other services (None without client credentials).
        self.service_tokens: ServiceTokens | None = None
        if settings.client_secret is not None:
            tokens = ServiceTokens(
                settings.token_url,
                settings.client_id or service_name,
                settings.client_secret,
                self.http,
                margin_s=settings.service_token_margin_s,
                clock=now,
            )
            self.service_tokens = tokens
            self.introspector = ApiKeyIntrospector(
                settings.introspection_url,
                tokens,
                self.http,
                cache_s=settings.introspection_cache_s,
                cache_size=settings.introspection_cache_size,
                clock=now,
            )

    def _now(self) -> datetime:
        # Indirect, so that replacing ``self.clock`` reaches every component.
        return self.clock()

    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.transport, timeout=self.settings.timeout_s, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def authenticate(self, credential: str) -> Principal:
        """The principal of a JWT or an API key; ``InvalidToken`` or ``AuthUnavailable`` otherwise."""
        try:
            if looks_like_api_key(credential):
                return await self._api_key(credential)
            return await self.verifier.verify(credential)
        except (JwksUnavailable, AuthServiceUnavailable) as exc:
            raise AuthUnavailable(str(exc)) from exc

    async def _api_key(self, credential: str) -> Principal:
        try:
            parse_api_key(credential)
        except InvalidApiKey as exc:
            # Before any network call: a typo or a truncated copy never reaches auth-svc.
            raise InvalidToken(str(exc)) from None
        if self.introspector is None:
            raise InvalidToken("API keys are not accepted: this service has no client secret for introspection")
        principal = await self.introspector.introspect(credential)
        if principal is None:
            raise InvalidToken("API key not active")
        return principal
