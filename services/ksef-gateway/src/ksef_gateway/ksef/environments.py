"""KSeF environments and their REST bases (REFERENCE.md §1)."""

from __future__ import annotations

from enum import StrEnum


class Environment(StrEnum):
    SIM = "sim"
    TEST = "test"
    DEMO = "demo"
    PROD = "prod"


OFFICIAL_BASE_URLS: dict[Environment, str] = {
    Environment.TEST: "https://api-test.ksef.mf.gov.pl/v2",
    Environment.DEMO: "https://api-demo.ksef.mf.gov.pl/v2",
    Environment.PROD: "https://api.ksef.mf.gov.pl/v2",
}


def base_url(environment: Environment, sim_base_url: str) -> str:
    """The v2 base of ``environment``; the simulator's comes from configuration (it runs wherever we start it)."""
    if environment is Environment.SIM:
        return sim_base_url.rstrip("/")
    return OFFICIAL_BASE_URLS[environment]
