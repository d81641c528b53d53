"""Fixtures of the web UI's browser tests. Screenshots go to ``KSEF_HUB_TEST_ARTEFACTS`` (default
``.artefacts/web-ui`` in the repository), one folder per test."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from platform_common.testing.browser import CHROMIUM_ARGS, Pages, chromium_path

REPO = Path(__file__).resolve().parents[3]
AXE = REPO / "ui" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def pages(browser: Browser) -> AsyncIterator[Pages]:
    made = Pages(browser, AXE)
    yield made
    assert made.errors == [], f"uncaught script errors in the web UI: {made.errors}"


@pytest.fixture
def artefacts(request: pytest.FixtureRequest) -> Path:
    root = Path(os.environ.get("KSEF_HUB_TEST_ARTEFACTS", REPO / ".artefacts" / "web-ui"))
    folder = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
