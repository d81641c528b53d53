"""Reading a service's ``GET /metrics`` in tests: the exposition parsed by prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str  # as exposed: ``..._total``, ``..._bucket``, ``..._count`` included
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    samples: list[Sample]

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def find(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum over the samples of ``name`` with these labels; None when there is none (an absent series)."""
        found = self.find(name, **labels)
        return sum(s.value for s in found) if found else None


def parse(text: str) -> Scrape:
    return Scrape(
        [
            Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    )


async def scrape(client: httpx.AsyncClient, token: str, path: str = "/metrics") -> Scrape:
    response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)
