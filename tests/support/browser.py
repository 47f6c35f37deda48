"""Headless Debian chromium driven by Playwright, for the page tests (not a test module).

Import the fixtures into a test module: ``from support.browser import browser_fixture,
page_fixture  # noqa: F401``. A missing browser fails the test with how to install it:
browser tests are never skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# The machine's network is closed: without these Chromium keeps trying to reach
# Google's hosts (updates, sync, QUIC probes) at every start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("FASTREDIS_SCREENSHOTS", "build/screenshots"))


def chromium_path() -> str:
    """Debian's chromium; an AssertionError saying how to get it when it is missing."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        raise AssertionError(
            f"{CHROMIUM} is missing: the page tests need Debian's chromium "
            "(`apt-get install -y chromium`, as .ci/run does)"
        )
    return CHROMIUM if os.path.exists(CHROMIUM) else str(shutil.which("chromium"))


@pytest.fixture(name="browser", scope="module")
def browser_fixture() -> Iterator[Browser]:
    """One headless chromium per test module (Playwright gives it a new empty profile);
    module-scoped: while it runs, its event loop is the running one, so async tests
    of other modules must not run under it."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(name="page")
def page_fixture(browser: Browser) -> Iterator[Page]:
    """A fresh page (own context: no cookies or cache shared between tests), 1280x800.
    Console errors and failed requests are collected in ``page.problems``."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    page.problems = problems  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a PNG of the page under build/screenshots (FASTREDIS_SCREENSHOTS) and
    return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
