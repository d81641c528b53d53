"""API keys: introspected at (a fake) auth-svc with a service token, cached briefly, keyed by a hash."""

from __future__ import annotations

import httpx
import pytest

from platform_common.auth import Authenticator, AuthUnavailable, InvalidToken
from platform_common.auth.api_keys import new_api_key, parse_api_key
from platform_common.testing.auth import FakeClock, TokenFactory

INTROSPECT = "/internal/introspect"
TOKEN = "/oauth/token"
VALID = new_api_key()[1]


class TestApiKeys:
    async def test_an_active_key_yields_its_principal(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        key = tokens.issue_api_key(sub="k-1", perms=["buffer.read"], nips=["5260250274"])
        principal = await authenticator.authenticate(key)
        assert principal.id == "k-1"
        assert principal.ptype == "api_key"
        assert principal.can("buffer.read", client_nip="5260250274")

    async def test_revocation_takes_effect_within_the_cache_time(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        key = tokens.issue_api_key(perms=["buffer.read"])
        await authenticator.authenticate(key)
        tokens.revoke_api_key(key)
        clock.advance(29)
        await authenticator.authenticate(key)  # still cached
        assert tokens.requests.count(INTROSPECT) == 1
        clock.advance(1)  # introspection_cache_s = 30
        with pytest.raises(InvalidToken, match="not active"):
            await authenticator.authenticate(key)
        assert tokens.requests.count(INTROSPECT) == 2

    async def test_inactive_answers_are_cached_too(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        unknown = new_api_key()[1]
        for _ in range(5):
            with pytest.raises(InvalidToken):
                await authenticator.authenticate(unknown)
        assert tokens.requests.count(INTROSPECT) == 1

    async def test_the_cache_never_holds_the_key(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        key = tokens.issue_api_key(perms=["buffer.read"])
        await authenticator.authenticate(key)
        assert authenticator.introspector is not None
        cache = authenticator.introspector._cache
        assert len(cache) == 1
        secret = parse_api_key(key).secret
        assert all(secret.encode() not in digest and key.encode() not in digest for digest in cache)
        assert secret not in repr(cache)

    async def test_the_cache_is_bounded(self, tokens: TokenFactory, clock: FakeClock) -> None:
        secret = tokens.add_service_client("t")
        auth = Authenticator(
            tokens.settings(client_secret=secret, introspection_cache_size=3),
            service_name="t",
            clock=clock,
            transport=tokens.transport(),
        )
        for _ in range(10):
            await auth.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        assert auth.introspector is not None and len(auth.introspector._cache) == 3
        await auth.aclose()

    @pytest.mark.parametrize(
        "key",
        [
            "khk_",
            "khk_abc",
            "khk_abc_",
            "khk__secret",
            "khk_ab-c_secret",
            "khk_a_" + "x" * 300,
            VALID[:-1],  # truncated
            VALID[:-1] + ("0" if VALID[-1] != "0" else "1"),  # bad checksum
            VALID[:20] + ("0" if VALID[20] != "0" else "1") + VALID[21:],  # a typo in the secret
        ],
        ids=["prefix", "short", "no-secret", "no-id", "dash", "long", "truncated", "checksum", "typo"],
    )
    async def test_malformed_keys_are_refused_without_asking(
        self, authenticator: Authenticator, tokens: TokenFactory, key: str
    ) -> None:
        with pytest.raises(InvalidToken, match=r"malformed|checksum"):
            await authenticator.authenticate(key)
        assert tokens.requests == []

    async def test_without_a_client_secret_api_keys_are_refused(self, tokens: TokenFactory, clock: FakeClock) -> None:
        auth = Authenticator(tokens.settings(), service_name="t", clock=clock, transport=tokens.transport())
        with pytest.raises(InvalidToken, match="not accepted"):
            await auth.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        assert tokens.requests == []

    async def test_a_key_past_its_expiry_is_refused(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        key = tokens.issue_api_key(perms=["buffer.read"])
        tokens.api_keys[key].claims["exp"] = int(tokens.clock().timestamp()) - 1
        with pytest.raises(InvalidToken):
            await authenticator.authenticate(key)


class TestServiceToken:
    async def test_obtained_once_and_reused_until_near_expiry(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        await authenticator.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        await authenticator.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        assert tokens.requests.count(TOKEN) == 1
        clock.advance(900 - 60 - 1)  # ttl 900 s, renewed 60 s ahead
        await authenticator.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        assert tokens.requests.count(TOKEN) == 1
        clock.advance(1)
        await authenticator.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        assert tokens.requests.count(TOKEN) == 2

    async def test_a_refused_service_token_is_replaced_once(
        self, authenticator: Authenticator, tokens: TokenFactory
    ) -> None:
        await authenticator.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        # auth-svc rotated and withdrew the key that signed our cached service token.
        old = tokens.kid
        tokens.rotate()
        tokens.withdraw(old)
        await authenticator.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        assert tokens.requests.count(TOKEN) == 2
        assert tokens.requests.count(INTROSPECT) == 3

    async def test_wrong_client_secret_is_a_configuration_error_not_a_bad_key(
        self, tokens: TokenFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        tokens.add_service_client("t", "right-secret")
        auth = Authenticator(
            tokens.settings(client_secret="wrong-secret"), service_name="t", clock=clock, transport=tokens.transport()
        )
        with pytest.raises(AuthUnavailable):
            await auth.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        assert "wrong-secret" not in caplog.text
        await auth.aclose()

    async def test_auth_svc_down_is_unavailable(self, tokens: TokenFactory, clock: FakeClock) -> None:
        def down(_request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        secret = tokens.add_service_client("t")
        auth = Authenticator(
            tokens.settings(client_secret=secret), service_name="t", clock=clock, transport=httpx.MockTransport(down)
        )
        with pytest.raises(AuthUnavailable):
            await auth.authenticate(tokens.issue_api_key(perms=["buffer.read"]))
        await auth.aclose()
