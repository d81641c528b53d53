"""The harness fixture: every test in the contract suite runs over both transports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from platform_common.testing.contract import Harness, open_harness


@pytest.fixture(params=["inprocess", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.postgres])])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "kafka":
        url = request.getfixturevalue("pg_url")  # one database, two schemas, as in dev and CI
        opened = open_harness("kafka", url, url, kafka_bootstrap=request.getfixturevalue("kafka_bootstrap"))
    else:
        opened = open_harness(
            "inprocess", f"sqlite+aiosqlite:///{tmp_path}/p.db", f"sqlite+aiosqlite:///{tmp_path}/c.db"
        )
    async with opened as h:
        yield h
