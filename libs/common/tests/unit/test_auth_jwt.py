"""Access JWT verification against a cached JWKS (served by the TokenFactory's fake auth-svc)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from platform_common.auth import Authenticator, AuthUnavailable, InvalidToken
from platform_common.auth.jwks import parse_jwks
from platform_common.testing.auth import FakeClock, TokenFactory

JWKS = "/.well-known/jwks.json"


def fetches(tokens: TokenFactory) -> int:
    return tokens.requests.count(JWKS)


class TestValidTokens:
    async def test_a_valid_token_yields_its_principal(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        token = tokens.mint(perms=["buffer.read"], nips=["5260250274"], roles=["office_accountant"])
        principal = await authenticator.authenticate(token)
        assert principal.ptype == "user"
        assert principal.perms == {"buffer.read"}
        assert principal.nips == {"5260250274"}
        assert principal.roles == {"office_accountant"}

    async def test_es256_keys_are_accepted_too(self, clock: FakeClock) -> None:
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.public_key().public_numbers()

        def b64(n: int) -> str:
            return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

        document = {"keys": [{"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y), "kid": "ec-1"}]}
        transport = httpx.MockTransport(lambda _request: httpx.Response(200, json=document))
        factory = TokenFactory(clock=clock)
        auth = Authenticator(factory.settings(), service_name="t", clock=clock, transport=transport)
        token = jwt.encode(factory.claims(perms=["ksef.read"]), private, algorithm="ES256", headers={"kid": "ec-1"})
        assert (await auth.authenticate(token)).perms == {"ksef.read"}
        await auth.aclose()


class TestRejectedTokens:
    async def test_expired_beyond_the_leeway(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        token = tokens.mint(ttl_s=900)
        clock.advance(900 + 9)  # leeway is 10 s
        await authenticator.authenticate(token)
        clock.advance(1)
        with pytest.raises(InvalidToken, match="expired"):
            await authenticator.authenticate(token)

    async def test_issued_in_the_future(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        clock.advance(3600)
        token = tokens.mint()
        clock.advance(-3600)
        with pytest.raises(InvalidToken, match="future"):
            await authenticator.authenticate(token)

    async def test_forged_signature(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        with pytest.raises(InvalidToken):
            await authenticator.authenticate(tokens.forged(perms=["ops"]))

    async def test_alg_none(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        with pytest.raises(InvalidToken, match="algorithm"):
            await authenticator.authenticate(tokens.unsigned(perms=["ops"]))
        assert fetches(tokens) == 0, "refused before any key lookup"

    async def test_hmac_keyed_with_the_public_key(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        with pytest.raises(InvalidToken, match="algorithm"):
            await authenticator.authenticate(tokens.hmac_with_public_key(perms=["ops"]))

    async def test_rs256(self, authenticator: Authenticator, tokens: TokenFactory) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(tokens.claims(), key, algorithm="RS256", headers={"kid": tokens.kid})
        with pytest.raises(InvalidToken, match="algorithm"):
            await authenticator.authenticate(token)

    @pytest.mark.parametrize(("claim", "value"), [("aud", "someone-else"), ("iss", "evil-auth")])
    async def test_other_audience_or_issuer(
        self, authenticator: Authenticator, tokens: TokenFactory, claim: str, value: str
    ) -> None:
        overrides: dict[str, Any] = {claim: value}
        with pytest.raises(InvalidToken):
            await authenticator.authenticate(tokens.mint(**overrides))

    @pytest.mark.parametrize("missing", ["exp", "iat", "sub", "ptype"])
    async def test_required_claims(self, authenticator: Authenticator, tokens: TokenFactory, missing: str) -> None:
        claims = tokens.claims()
        del claims[missing]
        token = jwt.encode(claims, tokens.keys[-1].private, algorithm="EdDSA", headers={"kid": tokens.kid})
        with pytest.raises(InvalidToken):
            await authenticator.authenticate(token)

    @pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "e30.e30.", "x" * 10_000])
    async def test_garbage(self, authenticator: Authenticator, garbage: str) -> None:
        with pytest.raises(InvalidToken):
            await authenticator.authenticate(garbage)

    async def test_a_token_that_breaks_the_claims_contract(
        self, authenticator: Authenticator, tokens: TokenFactory
    ) -> None:
        with pytest.raises(InvalidToken, match="claims"):
            await authenticator.authenticate(tokens.mint(ptype="superuser"))


class TestJwksCache:
    async def test_fetched_lazily_then_cached(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        assert fetches(tokens) == 0
        for _ in range(3):
            await authenticator.authenticate(tokens.mint())
        assert fetches(tokens) == 1
        clock.advance(300)  # jwks_cache_s
        await authenticator.authenticate(tokens.mint())
        assert fetches(tokens) == 2

    async def test_rotation_old_kid_verifies_while_published_new_kid_refetches_once(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        old_kid = tokens.kid
        old_token = tokens.mint()
        await authenticator.authenticate(old_token)
        assert fetches(tokens) == 1

        tokens.rotate()
        new_token = tokens.mint()
        assert tokens.kid != old_kid
        await authenticator.authenticate(old_token)
        assert fetches(tokens) == 1, "the old key is still cached: no refetch"
        await authenticator.authenticate(new_token)
        assert fetches(tokens) == 2, "an unknown kid refetches once"
        await authenticator.authenticate(old_token)
        await authenticator.authenticate(new_token)
        assert fetches(tokens) == 2

        # The old key leaves the JWKS; once the cache is refreshed, its tokens stop verifying.
        tokens.withdraw(old_kid)
        clock.advance(300)
        with pytest.raises(InvalidToken, match="unknown key"):
            await authenticator.authenticate(tokens.mint(kid=old_kid))
        await authenticator.authenticate(tokens.mint())

    async def test_unknown_kids_refetch_at_most_once_per_interval(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        await authenticator.authenticate(tokens.mint())
        assert fetches(tokens) == 1
        clock.advance(10)  # jwks_min_refetch_s
        for i in range(20):
            with pytest.raises(InvalidToken, match="unknown key"):
                await authenticator.authenticate(tokens.mint(kid=f"made-up-{i}", private_key=tokens.keys[-1].private))
        assert fetches(tokens) == 2, "twenty made-up kids, one refetch"
        clock.advance(10)
        with pytest.raises(InvalidToken):
            await authenticator.authenticate(tokens.mint(kid="made-up-again", private_key=tokens.keys[-1].private))
        assert fetches(tokens) == 3

    async def test_concurrent_requests_with_a_new_kid_share_one_refetch(
        self, authenticator: Authenticator, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        await authenticator.authenticate(tokens.mint())
        clock.advance(10)
        tokens.rotate()
        token = tokens.mint()
        await asyncio.gather(*(authenticator.authenticate(token) for _ in range(10)))
        assert fetches(tokens) == 2

    async def test_unreachable_without_keys_is_unavailable_not_invalid(
        self, tokens: TokenFactory, clock: FakeClock
    ) -> None:
        def down(_request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        auth = Authenticator(tokens.settings(), service_name="t", clock=clock, transport=httpx.MockTransport(down))
        with pytest.raises(AuthUnavailable):
            await auth.authenticate(tokens.mint())
        await auth.aclose()

    async def test_unreachable_with_cached_keys_keeps_verifying(self, tokens: TokenFactory, clock: FakeClock) -> None:
        up = True
        served = tokens.transport()
        calls = 0

        async def flaky(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            if not up:
                raise httpx.ConnectError("refused")
            return await served.handle_async_request(request)

        auth = Authenticator(tokens.settings(), service_name="t", clock=clock, transport=httpx.MockTransport(flaky))
        await auth.authenticate(tokens.mint())
        up = False
        clock.advance(300)
        await auth.authenticate(tokens.mint())
        await auth.authenticate(tokens.mint())
        assert calls == 2, "one failed refresh, then no retry before jwks_min_refetch_s"
        await auth.aclose()


class TestParseJwks:
    def test_only_ed25519_and_p256_signing_keys_are_taken(self, tokens: TokenFactory) -> None:
        ed = tokens.jwks()["keys"][0]
        document = {
            "keys": [
                ed,
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
                {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa"},
                {**ed, "kid": "enc", "use": "enc"},
                {**ed, "kid": "wrong-alg", "alg": "ES256"},
                {"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "broken"},
                {**ed, "kid": ""},
                "junk",
            ]
        }
        assert set(parse_jwks(document)) == {ed["kid"]}

    @pytest.mark.parametrize("document", [[], {}, {"keys": "x"}, None])
    def test_not_a_jwks(self, document: object) -> None:
        with pytest.raises(ValueError, match="JWKS"):
            parse_jwks(document)
