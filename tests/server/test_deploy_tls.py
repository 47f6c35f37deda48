"""`fastredis serve --ssl-certfile --ssl-keyfile`: https:// and wss:// with a self-signed
certificate made by the test, the viewer page over wss:// in Chromium, and files that do
not load refused at start in one line."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect
from support.browser import browser_fixture  # noqa: F401
from support.images import frame
from support.serve_process import DEADLINE, Serve
from support.tls import self_signed
from support.waiting import wait_until
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(serve: type[Serve], cert: tuple[Path, Path]) -> Iterator[str]:
    """The https:// address of a `serve` with TLS (as its banner prints it)."""
    s = serve("--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[1]))
    base = s.wait_line("API: ").split()[1]
    assert base == f"https://localhost:{s.port}"
    assert f"wss://localhost:{s.port}/data/{{sid}}/push" in s.output[-1]
    base = base.replace("localhost", "127.0.0.1")  # one address family, whatever the host
    context = ssl.create_default_context(cafile=str(cert[0]))

    def answers() -> bool:
        try:
            return httpx.get(base + "/healthz", verify=context, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, DEADLINE, what=f"{base}/healthz")
    yield base


def test_https_and_wss(tls_server: str, cert: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(cafile=str(cert[0]))
    wss = tls_server.replace("https://", "wss://")
    with connect(f"{wss}/data/secure/push?ack=1", ssl=context) as ws:
        ws.send(json.dumps([6]))
        ws.send(b"sealed")
        [entry] = json.loads(ws.recv(timeout=DEADLINE))
    with connect(f"{wss}/data/secure/pull?last_entry_id=0", ssl=context) as ws:
        assert json.loads(ws.recv(timeout=DEADLINE))[0][1] == entry
        assert ws.recv(timeout=DEADLINE) == b"sealed"
    got = httpx.get(f"{tls_server}/data/secure?last_entry_id=0", verify=context, timeout=10)
    assert got.content == b"sealed"
    with pytest.raises(httpx.RemoteProtocolError):  # no plain HTTP on the TLS port
        httpx.get(tls_server.replace("https://", "http://") + "/healthz", timeout=5)


def test_the_viewer_uses_wss_by_itself(
    tls_server: str, cert: tuple[Path, Path], browser: Browser
) -> None:
    context = browser.new_context(ignore_https_errors=True)  # the test's own certificate
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(f"{tls_server}/view/cam")
        expect(page.locator("#status")).to_have_text("live")
        wss = ssl.create_default_context(cafile=str(cert[0]))
        with connect(f"{tls_server.replace('https', 'wss')}/data/cam/push?ack=1", ssl=wss) as ws:
            image = frame(shade=4)
            ws.send(json.dumps([len(image)]))
            ws.send(image)
            [entry] = json.loads(ws.recv(timeout=DEADLINE))
        expect(page.locator("#frame")).to_have_attribute("data-entry", entry)
        assert sockets and all(url.startswith("wss://") for url in sockets), sockets
    finally:
        context.close()


def test_certificate_files_that_do_not_load_are_one_line(
    serve: type[Serve], cert: tuple[Path, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    s = serve("--ssl-certfile", str(missing))
    assert s.wait_exit() == 1
    assert s.output == [
        f"fastredis serve: cannot use the TLS certificate {missing}: No such file or directory\n"
    ]
    s = serve("--ssl-certfile", str(cert[0]), "--ssl-keyfile", str(cert[0]))  # not a key
    assert s.wait_exit() == 1
    [line] = s.output
    assert line.startswith(f"fastredis serve: cannot use the TLS certificate {cert[0]} / ")
    s = serve("--ssl-keyfile", str(cert[1]))
    assert s.wait_exit() == 1
    assert "--ssl-keyfile needs --ssl-certfile" in "".join(s.output)
