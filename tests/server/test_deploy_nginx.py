"""`fastredis serve --root-path /fastredis --api-key ...` behind a real nginx (Debian's),
with the site config docs/guides/deploying.md shows: websocket push and pull, REST, and
the pages in Chromium, all at the sub-path, with an access token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from support.browser import browser_fixture, page_fixture  # noqa: F401
from support.images import frame
from support.nginx import Nginx
from support.serve_process import DEADLINE, tracked_serves
from support.waiting import wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

TOKEN = "nginx-test-token-0123456789"
TIMEOUT_MS = 15_000


class Site:
    """The server through nginx: `http` and `ws` end in /fastredis."""

    def __init__(self, nginx: Nginx) -> None:
        self.http = f"http://127.0.0.1:{nginx.port}/fastredis"
        self.ws = f"ws://127.0.0.1:{nginx.port}/fastredis"

    def push(self, sid: str, *payloads: bytes) -> list[str]:
        with connect(f"{self.ws}/data/{sid}/push?ack=1&token={TOKEN}") as ws:
            return _push(ws, payloads)


def _push(ws: ClientConnection, payloads: tuple[bytes, ...]) -> list[str]:
    ends = [sum(len(p) for p in payloads[: i + 1]) for i in range(len(payloads))]
    ws.send(json.dumps(ends))  # the push header: each entry's end offset
    ws.send(b"".join(payloads))
    ids: list[str] = json.loads(ws.recv(timeout=DEADLINE))
    return ids


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    serves = tracked_serves()
    serve = next(serves)
    try:
        s = serve("--root-path", "/fastredis", "--api-key", TOKEN)
        s.wait_line("Root path: /fastredis")
        with Nginx(tmp_path_factory.mktemp("nginx"), f"127.0.0.1:{s.port}") as nginx:
            site = Site(nginx)

            def ready() -> bool:
                try:
                    return httpx.get(site.http + "/healthz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, DEADLINE, what=f"{site.http}/healthz through nginx")
            yield site
    finally:
        serves.close()  # kills the server


def test_push_pull_and_rest_through_nginx_with_a_token(site: Site) -> None:
    ids = site.push("cam", b"one", b"two")
    with connect(f"{site.ws}/data/cam/pull?last_entry_id=0&count=10&token={TOKEN}") as ws:
        header = json.loads(ws.recv(timeout=DEADLINE))
        payload = ws.recv(timeout=DEADLINE)
    assert [entry[1] for entry in header] == ids
    assert payload == b"onetwo"
    got = httpx.get(
        f"{site.http}/data/cam?last_entry_id=0",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=DEADLINE,
    )
    assert got.status_code == 200 and got.content == b"one"
    # without the token nothing goes through, websocket or not
    assert httpx.get(f"{site.http}/data/cam", timeout=DEADLINE).status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{site.ws}/data/cam/pull").close()
    assert refused.value.response.status_code == 401


def test_a_foreign_page_is_still_refused_through_nginx(site: Site) -> None:
    url = f"{site.ws}/data/cam/push?token={TOKEN}"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin="http://evil.example").close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    own = site.http.removesuffix("/fastredis")
    with connect(url + "&ack=1", origin=own) as ws:  # type: ignore[arg-type]
        assert len(_push(ws, (b"from the page's own origin",))) == 1


def test_the_pages_work_at_the_sub_path(site: Site, page: Page, tmp_path: Path) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    first = site.push("door", frame(shade=1))[0]
    page.goto(f"{site.http}/?token={TOKEN}")
    row = page.locator('tr[data-sid="door"]')
    expect(row).to_be_visible()
    link = row.locator("a")
    expect(link).to_have_attribute("href", f"{site.http}/view/door?token={TOKEN}")
    expect(page.locator("#playground-link")).to_have_attribute(
        "href", f"{site.http}/graphql?token={TOKEN}"
    )
    expect(row.locator(".thumb img")).to_have_attribute("data-entry", first)

    link.click()  # the viewer, its websocket through nginx
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#frame")).to_have_attribute("data-entry", first)
    second = site.push("door", frame(shade=2))[0]
    expect(page.locator("#frame")).to_have_attribute("data-entry", second)
    expect(page.locator("#home")).to_have_attribute("href", f"{site.http}/?token={TOKEN}")

    page.goto(f"{site.http}/graphql?token={TOKEN}")  # the playground: HTTP and websocket
    expect(page.locator("#docs")).to_contain_text("streamMeta")
    page.fill("#query", 'subscription { data(sids: ["door"]) { sid time } }')
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("subscribed")
    third = site.push("door", frame(shade=3))[0]
    expect(page.locator("#result")).to_contain_text(third)
    page.click("#stop")
    assert page.problems == []  # type: ignore[attr-defined]
