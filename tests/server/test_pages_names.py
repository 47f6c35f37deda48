"""Stream names are data, never markup: names that look like HTML or like the pages'
own slots leave the viewer and the dashboard working (headless chromium)."""

from __future__ import annotations

import html
from urllib.parse import quote

import pytest
import redis
from playwright.sync_api import Page, expect
from support.browser import browser_fixture, page_fixture  # noqa: F401
from support.images import frame
from support.live_server import LiveServer, server_fixture  # noqa: F401

from fastredis.server.endpoints.pages import render

# ("/" is not in the list: a name with it is no path segment of /view/{sid})
NAMES = ["<!--<script>", "{{config}}", "<script>&amp;<b>", "{{title}}\u2028'\""]
TIMEOUT_MS = 15_000


@pytest.mark.parametrize("sid", NAMES)
def test_the_viewer_of_an_odd_name_goes_live(
    server: LiveServer, redis_url: str, page: Page, plain_redis: redis.Redis, sid: str
) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.http_url}/view/{quote(sid, safe='')}")
    expect(page).to_have_title(f"{sid} · fastredis")
    expect(page.locator("#name")).to_have_text(sid)
    expect(page.locator("#status")).to_have_text("live")  # its script ran and connected
    entry = plain_redis.xadd(sid, {"d": frame(shade=3)}).decode()
    expect(page.locator("#frame")).to_have_attribute("data-entry", entry)
    page.goto(server.http_url + "/")
    expect(page.locator("#streams tbody tr")).to_have_count(1)
    expect(page.locator("#streams tbody tr")).to_have_attribute("data-sid", sid)
    assert page.problems == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("sid", NAMES)
def test_the_config_is_one_script_element_whatever_the_name(sid: str) -> None:
    body = render("viewer.html", {"sid": sid}, sid)
    config = body.split('<script type="application/json" id="fr-config">', 1)[1]
    config = config.split("</script>", 1)[0]
    assert "<" not in config and ">" not in config and "&" not in config
    assert f"<title>{html.escape(sid)}</title>" in body
