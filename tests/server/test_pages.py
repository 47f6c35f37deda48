"""The browser pages in headless Debian chromium (Playwright): the dashboard, the viewer,
MJPEG in an <img>, and the GraphQL playground with no internet. Each test takes a
screenshot (build/screenshots/)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from playwright.sync_api import Page, Route, expect
from support.browser import browser_fixture, page_fixture, screenshot  # noqa: F401
from support.images import frame
from support.live_server import LiveServer, server_fixture  # noqa: F401

TIMEOUT_MS = 15_000


@pytest.fixture
def site(server: LiveServer, redis_url: str, page: Page) -> Iterator[str]:
    """The server's base URL, Redis flushed; every request the page makes to another
    host is refused and recorded in ``page.foreign``."""
    foreign: list[str] = []

    def only_local(route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.foreign = foreign  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    yield server.http_url


class Pusher:
    """Pushes JPEG frames to a stream in a thread until stopped (at most `limit`)."""

    def __init__(self, client: redis.Redis, sid: str, fps: float = 20, limit: int = 2000):
        self.client, self.sid, self.interval, self.limit = client, sid, 1 / fps, limit
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in range(self.limit):
            if self.stop.wait(self.interval):
                return
            self.ids.append(self.client.xadd(self.sid, {"d": frame(shade=i)}).decode())

    def __enter__(self) -> Pusher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_index_answers_json_to_api_clients_and_a_page_to_browsers(site: str) -> None:
    api = httpx.get(site + "/")
    assert api.headers["content-type"] == "application/json"
    assert api.json()["push"] == "ws /data/{sid}/push"
    browser = httpx.get(site + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*"})
    assert browser.headers["content-type"].startswith("text/html")
    assert "<table" in browser.text and "src=" not in browser.text.split("<script>")[0]


def test_dashboard_lists_streams_with_live_thumbnails(
    site: str, page: Page, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("cam", {"d": frame(shade=1)})
    plain_redis.xadd("snapshots", {"d": frame(shade=2, fmt="PNG")})
    plain_redis.xadd("log", {"d": b"hello"})
    plain_redis.xgroup_create("log", "readers", id="0")
    page.goto(site + "/")
    rows = page.locator("#streams tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_have_attribute("data-sid", "cam")
    cam = page.locator('tr[data-sid="cam"]')
    expect(cam.locator("td").nth(2)).to_have_text("1")
    expect(cam.locator("a")).to_have_attribute(
        "href", "http://" + site.split("//")[1] + "/view/cam"
    )
    expect(page.locator('tr[data-sid="snapshots"] .thumb img')).to_be_visible()
    expect(page.locator('tr[data-sid="log"] .thumb')).to_have_text("5 B")  # not an image
    expect(page.locator('tr[data-sid="log"] td').nth(5)).to_have_text("1")
    first = cam.locator(".thumb img").get_attribute("data-entry")
    with Pusher(plain_redis, "cam", fps=10) as pusher:
        # the thumbnail follows the stream, and the rate shows it moving
        expect(cam.locator(".thumb img")).not_to_have_attribute("data-entry", first or "")
        page.wait_for_function(
            "() => parseFloat(document.querySelector('tr[data-sid=cam] td:nth-child(4)')"
            ".textContent) > 0"
        )
        assert pusher.ids
        screenshot(page, "dashboard")
    assert page.foreign == [] and page.problems == []  # type: ignore[attr-defined]


def test_viewer_shows_the_live_image_with_rate_size_and_latency(
    site: str, page: Page, plain_redis: redis.Redis
) -> None:
    page.goto(site + "/view/cam")
    expect(page.locator("#name")).to_have_text("cam")
    expect(page.locator("#waiting")).to_be_visible()
    with Pusher(plain_redis, "cam", fps=15) as pusher:
        image = page.locator("#frame")
        expect(image).to_be_visible()
        first = image.get_attribute("data-entry")
        assert first in pusher.ids
        expect(image).not_to_have_attribute("data-entry", first or "")  # it changes
        expect(page.locator("#size")).to_have_text("320\u00d7180")
        expect(page.locator("#latency")).to_have_text(re.compile(r"^\d+ ms$"))
        page.wait_for_function("() => parseFloat(document.getElementById('fps').textContent) > 0")
        expect(page.locator("#status")).to_have_text("live")
        screenshot(page, "viewer")
    assert page.foreign == [] and page.problems == []  # type: ignore[attr-defined]


def test_mjpeg_in_an_img_tag(site: str, page: Page, plain_redis: redis.Redis) -> None:
    page.goto(site + "/healthz")  # the page's origin: the server
    # an MJPEG image never finishes loading: wait for the DOM only
    page.set_content(f'<img id="live" src="{site}/mjpeg/cam">', wait_until="domcontentloaded")
    page.wait_for_function("() => document.getElementById('live').naturalWidth === 640")
    plain_redis.xadd("cam", {"d": frame(320, 180, shade=1)})
    page.wait_for_function("() => document.getElementById('live').naturalWidth === 320")
    screenshot(page, "mjpeg")
    plain_redis.xadd("cam", {"d": frame(200, 100, shade=2)})
    page.wait_for_function("() => document.getElementById('live').naturalWidth === 200")


def test_playground_runs_queries_mutations_and_subscriptions_offline(
    site: str, page: Page, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("cam", {"d": b"first"})
    page.goto(site + "/graphql")
    expect(page.locator("#docs")).to_contain_text("streamMeta(sid: String!, meta: JSON)")

    def run(operation: str) -> None:
        page.fill("#query", operation)
        page.click("#run")

    run('{ streams(sids: ["cam"]) { sid length } }')
    expect(page.locator("#result")).to_contain_text('"length": 1')
    assert json.loads(page.locator("#result").text_content() or "") == {
        "data": {"streams": [{"sid": "cam", "length": 1}]}
    }

    page.select_option("#examples", "meta")
    page.click("#run")
    expect(page.locator("#result")).to_contain_text('"format": "jpeg"')
    assert json.loads(plain_redis.get("XMETA:cam") or b"null") == {"format": "jpeg", "fps": 30}

    run('subscription { data(sids: ["cam"]) { sid time utf8 } }')
    expect(page.locator("#status")).to_contain_text("subscribed")
    entry = plain_redis.xadd("cam", {"d": b"live entry"}).decode()
    expect(page.locator("#result")).to_contain_text("live entry")
    expect(page.locator("#result")).to_contain_text(entry)
    expect(page.locator("#status")).to_contain_text("1 event")
    screenshot(page, "playground")
    page.click("#stop")
    assert page.foreign == [] and page.problems == []  # type: ignore[attr-defined]
