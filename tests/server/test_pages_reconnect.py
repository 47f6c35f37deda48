"""The viewer page and the dashboard ride through a server restart by themselves
(headless chromium against a `fastredis serve` process killed and started again)
and say how long they were without data."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import Page, expect
from support.browser import browser_fixture, page_fixture, screenshot  # noqa: F401
from support.images import frame
from support.serve_process import ServeProcess

TIMEOUT_MS = 30_000


@pytest.fixture
def server(redis_url: str, page: Page) -> Iterator[ServeProcess]:
    page.set_default_timeout(TIMEOUT_MS)
    with ServeProcess(redis_url) as srv:
        yield srv


def test_viewer_reconnects_and_shows_the_gap(
    server: ServeProcess, page: Page, plain_redis: redis.Redis
) -> None:
    first = plain_redis.xadd("cam", {"d": frame(shade=10)}).decode()
    page.goto(f"http://127.0.0.1:{server.port}/view/cam")
    expect(page.locator("#frame")).to_have_attribute("data-entry", first)
    expect(page.locator("#gap")).to_be_hidden()
    server.stop(signal.SIGKILL)
    expect(page.locator("#status")).to_contain_text("retrying in")
    server.start()
    expect(page.locator("#status")).to_have_text("live")
    second = plain_redis.xadd("cam", {"d": frame(shade=200)}).decode()
    expect(page.locator("#frame")).to_have_attribute("data-entry", second)
    expect(page.locator("#gap")).to_contain_text("reconnected: no frames from")
    screenshot(page, "viewer-after-reconnect")


def test_dashboard_retries_and_shows_the_gap(
    server: ServeProcess, page: Page, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("cam", {"d": b"x"})
    page.goto(f"http://127.0.0.1:{server.port}/")
    expect(page.locator('tr[data-sid="cam"]')).to_be_visible()
    server.stop(signal.SIGKILL)
    expect(page.locator("#error")).to_contain_text("retrying in")
    server.start()
    plain_redis.xadd("other", {"d": b"y"})
    expect(page.locator('tr[data-sid="other"]')).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#gap")).to_contain_text("reconnected: no data from")
    screenshot(page, "dashboard-after-reconnect")
