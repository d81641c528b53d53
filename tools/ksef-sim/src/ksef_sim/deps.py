"""FastAPI dependencies every router uses: the caller from its bearer token, and the rate limit of the route."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from ksef_sim.errors import Forbidden
from ksef_sim.ratelimit import Group
from ksef_sim.security import (
    ACCESS_TOKEN,
    AUTHENTICATION_TOKEN,
    REFRESH_TOKEN,
    Caller,
    TokenService,
    bearer_token,
    client_ip,
)
from ksef_sim.state import Sim, get_sim


def _ip_allowed(ip: str, allowed: tuple[str, ...]) -> bool:
    if not allowed:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for rule in allowed:
        try:
            if "-" in rule:
                low, high = (ipaddress.ip_address(part.strip()) for part in rule.split("-", 1))
                if low <= address <= high:  # type: ignore[operator]
                    return True
            elif "/" in rule:
                if address in ipaddress.ip_network(rule, strict=False):
                    return True
            elif address == ipaddress.ip_address(rule):
                return True
        except ValueError:
            continue
    return False


def access(group: Group = Group.OTHER) -> Callable[[Request], Awaitable[Caller]]:
    """Dependency: a valid access token (``ContextToken``), its IP policy, then the rate limit of ``group``."""

    async def dependency(request: Request) -> Caller:
        sim = get_sim(request)
        claims = sim.tokens.decode(bearer_token(request), expected_type=ACCESS_TOKEN, now=sim.clock.now())
        caller = TokenService.caller_from_claims(claims)
        ip = client_ip(request)
        if not _ip_allowed(ip, caller.allowed_ips):
            raise Forbidden(
                "ip-not-allowed",
                "Żądanie pochodzi z adresu IP innego niż wskazany podczas uwierzytelnienia.",
                {"clientIp": ip},
            )
        sim.limiter.hit(group, f"{caller.context.type}:{caller.context.value}|{ip}", sim.clock.now().timestamp())
        request.state.caller = caller
        return caller

    return dependency


def token_claims(expected_type: str, group: Group = Group.OTHER) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """Dependency for the auth-flow endpoints: the verified claims of an authentication or refresh token."""

    async def dependency(request: Request) -> dict[str, Any]:
        sim = get_sim(request)
        claims = sim.tokens.decode(bearer_token(request), expected_type=expected_type, now=sim.clock.now())
        context_key = f"{claims.get('cit')}:{claims.get('civ')}"
        sim.limiter.hit(group, f"{context_key}|{client_ip(request)}", sim.clock.now().timestamp())
        return claims

    return dependency


authentication_claims = token_claims(AUTHENTICATION_TOKEN)
refresh_claims = token_claims(REFRESH_TOKEN)


def public(group: Group = Group.PUBLIC) -> Callable[[Request], Awaitable[None]]:
    """Dependency for unauthenticated endpoints: limited per IP."""

    async def dependency(request: Request) -> None:
        sim: Sim = get_sim(request)
        sim.limiter.hit(group, client_ip(request), sim.clock.now().timestamp())

    return dependency
