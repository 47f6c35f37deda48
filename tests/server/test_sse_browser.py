"""EventSource in headless chromium (Playwright) reading GET /sse/{sid}: messages with
their ids, a resume from ?lastEventID= with its gap event, and several streams by
event name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import Page
from support.browser import browser_fixture, page_fixture  # noqa: F401
from support.live_server import LiveServer, server_fixture  # noqa: F401

TIMEOUT_MS = 15_000

LISTEN = """([url, names]) => {
  window.got = [];
  const source = new EventSource(url);
  const keep = (e) => window.got.push({type: e.type, id: e.lastEventId, data: e.data});
  source.onmessage = keep;
  for (const name of names) source.addEventListener(name, keep);
  window.source = source;
  return new Promise((resolve) => { source.onopen = () => resolve(true); });
}"""


@pytest.fixture
def site(server: LiveServer, redis_url: str, page: Page) -> Iterator[str]:
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.http_url + "/healthz")  # the page's origin: the server
    yield server.http_url
    page.evaluate("window.source && window.source.close()")
    # (a 404 for /favicon.ico is the only console error a bare page may show)
    assert not [p for p in page.problems if p.startswith("page error")]  # type: ignore[attr-defined]


def got(page: Page, n: int) -> list[dict[str, str]]:
    page.wait_for_function(f"window.got.length >= {n}")
    return page.evaluate("window.got")


def test_eventsource_gets_each_entry_with_its_id(
    site: str, page: Page, plain_redis: redis.Redis
) -> None:
    assert page.evaluate(LISTEN, ["/sse/cam", []])
    ids = [plain_redis.xadd("cam", {"d": f'{{"n": {i}}}'}).decode() for i in range(3)]
    events = got(page, 3)
    assert [(e["type"], e["id"], e["data"]) for e in events] == [
        ("message", eid, f'{{"n": {i}}}') for i, eid in enumerate(ids)
    ]


def test_eventsource_resumes_from_the_query_and_hears_the_gap(
    site: str, page: Page, plain_redis: redis.Redis
) -> None:
    ids = [plain_redis.xadd("g", {"d": str(i)}).decode() for i in range(6)]
    plain_redis.xtrim("g", maxlen=2, approximate=False)
    assert page.evaluate(LISTEN, [f"/sse/g?lastEventID={ids[1]}", ["gap"]])
    events = got(page, 3)
    assert events[0]["type"] == "gap" and ids[1] in events[0]["data"]
    assert [(e["id"], e["data"]) for e in events[1:]] == [(ids[4], "4"), (ids[5], "5")]


def test_eventsource_tells_several_streams_apart(
    site: str, page: Page, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("a", {"d": b"from a"}, id="1-0")
    plain_redis.xadd("b", {"d": b"from b"}, id="2-0")
    assert page.evaluate(LISTEN, ["/sse/a+b?last_entry_id=0", ["a", "b"]])
    events = got(page, 2)
    assert sorted((e["type"], e["data"]) for e in events) == [("a", "from a"), ("b", "from b")]
    assert events[-1]["id"] == "1-0+2-0"
