"""`fastredis serve`'s embedded Valkey: locked with a password when access control is
on, a dead one stops the server (exit 1, said once), a taken port is one line."""

from __future__ import annotations

import json
import os
import signal
import socket

import httpx
import pytest
import redis
from support.serve_process import DEADLINE, Serve
from support.waiting import wait_until
from websockets.sync.client import connect

TOKEN = "k-0123456789"
JWT_SECRET = "a-jwt-secret-of-32-bytes-or-more"


def _valkey(line: str) -> tuple[int, int, str]:
    """(pid, port, shown URL) from the "Redis: embedded Valkey (pid N) at URL..." line."""
    pid = int(line.split("(pid ")[1].split(")")[0])
    url = line.rsplit(" at ", 1)[1].split(",")[0].strip()
    return pid, int(url.rsplit(":", 1)[1].split("/")[0]), url


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--api-key", TOKEN), {}), ((), {"FASTREDIS_JWT_SECRET": JWT_SECRET})],
    ids=["api-key", "jwt-secret"],
)
def test_with_access_control_the_embedded_valkey_needs_a_password(
    serve: type[Serve], args: tuple[str, ...], env: dict[str, str]
) -> None:
    s = serve(*args, **env)
    _, port, shown = _valkey(s.wait_line("Redis: embedded Valkey"))
    assert ":***@" in shown  # a password, not shown
    with (
        redis.Redis(port=port, socket_timeout=5) as stranger,
        pytest.raises(redis.AuthenticationError),
    ):
        stranger.get("anything")
    wait_until(lambda: _answers(s.port), DEADLINE, what="the API")
    if args:  # the server itself still reads and writes
        url = f"ws://127.0.0.1:{s.port}/data/locked/push?ack=1&token={TOKEN}"
        with connect(url) as ws:
            ws.send(json.dumps([2]))
            ws.send(b"ok")
            assert len(json.loads(ws.recv(timeout=DEADLINE))) == 1
        got = httpx.get(
            f"http://127.0.0.1:{s.port}/data/locked?last_entry_id=0",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=DEADLINE,
        )
        assert got.content == b"ok"
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit() == 0, "".join(s.output)


def test_without_access_control_the_embedded_valkey_is_open_on_loopback(
    serve: type[Serve],
) -> None:
    s = serve()
    _, port, shown = _valkey(s.wait_line("Redis: embedded Valkey"))
    assert "@" not in shown
    with redis.Redis(port=port, socket_timeout=5) as local:
        assert local.ping()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_dead_embedded_valkey_stops_the_server_with_status_1(
    serve: type[Serve], workers: str
) -> None:
    s = serve("--workers", workers)
    pid, _, _ = _valkey(s.wait_line("Redis: embedded Valkey"))
    wait_until(lambda: _answers(s.port), DEADLINE, what="the API")
    os.kill(pid, signal.SIGKILL)
    assert s.wait_exit() == 1, "".join(s.output)
    out = "".join(s.output)
    said = f"the embedded Valkey (pid {pid}) was killed (SIGKILL); stopping the server"
    assert out.count(said) == 1, out
    assert "embedded Valkey stopped" not in out and "Traceback" not in out


def test_a_taken_embedded_port_is_one_line(serve: type[Serve]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = serve("--embedded-port", str(port))
        assert s.wait_exit() == 1
    lines = [line for line in s.output if line.strip()]
    assert lines == [
        f"fastredis serve: cannot start the embedded Valkey: port {port} on 127.0.0.1 is "
        "already in use (another server is running there): pick another --embedded-port, "
        "or leave it out for a free one\n"
    ], "".join(s.output)


def test_the_server_reaches_its_embedded_valkey_by_a_private_unix_socket(
    serve: type[Serve],
) -> None:
    s = serve()
    _, port, _ = _valkey(s.wait_line("Redis: embedded Valkey"))
    path = s.wait_line("Redis: the server reaches it by ").rsplit(" by ", 1)[1].strip()
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700  # no other user
    wait_until(lambda: _answers(s.port), DEADLINE, what="the API")
    with connect(f"ws://127.0.0.1:{s.port}/data/by-socket/push?ack=1") as ws:
        ws.send(json.dumps([2]))
        ws.send(b"ok")
        assert len(json.loads(ws.recv(timeout=DEADLINE))) == 1
    got = httpx.get(f"http://127.0.0.1:{s.port}/data/by-socket?last_entry_id=0", timeout=DEADLINE)
    assert got.content == b"ok"
    with redis.Redis(port=port, socket_timeout=5) as local:  # the TCP port stays open
        clients = local.client_list()
    assert any(c["addr"].startswith(path) for c in clients), clients  # the server's
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit() == 0, "".join(s.output)
    assert not os.path.exists(os.path.dirname(path))
