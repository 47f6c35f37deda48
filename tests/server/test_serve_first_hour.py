"""What `fastredis serve` tells a new user: a banner URL that opens in a browser, a
warning when it listens beyond this machine with no access control, and a mistyped flag
answered with serve's own usage and a guess."""

from __future__ import annotations

import signal

import httpx
from support.serve_process import DEADLINE, Serve
from support.waiting import wait_until


def test_the_banner_url_opens_in_a_browser(serve: type[Serve]) -> None:
    s = serve()
    url = s.wait_line("API: ").split()[1]
    assert url == f"http://localhost:{s.port}"

    def answers() -> bool:
        try:
            return httpx.get(url, headers={"Accept": "text/html"}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, DEADLINE, what=f"{url} to answer")
    page = httpx.get(url, headers={"Accept": "text/html"}, timeout=DEADLINE)
    assert "<html" in page.text.lower()


def test_every_interface_without_access_control_warns(serve: type[Serve]) -> None:
    s = serve("--host", "0.0.0.0")
    s.wait_line("API: ")  # the warning comes before it
    [warning] = [line for line in s.output if "warning" in line]
    assert warning.startswith("fastredis serve: warning: listening on 0.0.0.0 with no access")
    assert "--api-key" in warning
    s.wait_ready()  # stopped once serving, not while it starts
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit() == 0


def test_no_warning_with_access_control_or_on_loopback(serve: type[Serve]) -> None:
    for args in (("--host", "0.0.0.0", "--api-key", "k-1234567890"), ("--host", "127.0.0.1")):
        s = serve(*args)
        s.wait_line("GraphQL playground: ")
        s.wait_ready()
        s.proc.send_signal(signal.SIGTERM)
        assert s.wait_exit() == 0
        assert "warning" not in "".join(s.output), args


def test_a_mistyped_flag_shows_serves_usage_and_a_guess(serve: type[Serve]) -> None:
    s = serve("--prot", "1")
    assert s.wait_exit() == 2
    out = "".join(s.output)
    assert out.startswith("usage: fastredis serve ")
    assert out.rstrip().endswith(
        "fastredis serve: error: unrecognized arguments: --prot 1 (did you mean --port?)"
    )
