"""`fastredis serve` end to end, as a subprocess: the embedded Valkey starts, the API
answers, SIGTERM/SIGINT stop both; a taken port or an unreachable Redis gives a clear
message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from support.serve_process import Serve, python_env
from support.waiting import process_gone, wait_until
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis, free_port

DEADLINE = 30.0


def test_serve_with_embedded_valkey_stops_it_on_sigterm(serve: type[Serve]) -> None:
    s = serve()
    redis_line = s.wait_line("Redis: embedded Valkey")
    pid = int(redis_line.split("(pid ")[1].split(")")[0])
    url = redis_line.rsplit(" at ", 1)[1].split(",")[0].strip()
    api_line = s.wait_line("API: ")
    assert f"http://localhost:{s.port}" in api_line  # what a browser takes, as the docs say
    assert f"http://localhost:{s.port}/graphql" in s.wait_line("GraphQL playground: ")
    base = f"127.0.0.1:{s.port}"

    def answers() -> bool:
        try:
            return httpx.get(f"http://{base}/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    deadline = time.monotonic() + DEADLINE
    while not answers():
        assert s.proc.poll() is None and time.monotonic() < deadline, "".join(s.output)
        time.sleep(0.05)
    with connect(f"ws://{base}/data/cli/push?ack=1") as ws:
        # the client offers permessage-deflate; the server must not take it
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send(json.dumps([5]))
        ws.send(b"hello")
        [entry_id] = json.loads(ws.recv(timeout=DEADLINE))
    assert redis.Redis.from_url(url).xrange("cli") == [(entry_id.encode(), {b"d": b"hello"})]
    resp = httpx.get(f"http://{base}/data/cli", timeout=DEADLINE)
    assert resp.content == b"hello"

    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit() == 0, "".join(s.output)
    wait_until(lambda: process_gone(pid), DEADLINE, what=f"process {pid} to exit")
    assert "embedded Valkey stopped" in "".join(s.output)
    assert "Traceback" not in "".join(s.output)


def test_serve_uses_redis_url_from_env_and_stops_on_sigint(
    serve: type[Serve], redis_url: str
) -> None:
    s = serve("--maxlen", "5", REDIS_URL=redis_url)
    assert s.wait_line("Redis: ").strip() == f"Redis: {redis_url}"
    s.wait_line("API: ")
    base = f"127.0.0.1:{s.port}"
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            with connect(f"ws://{base}/data/t/push?header=0", open_timeout=1) as ws:
                for i in range(300):
                    ws.send(str(i).encode())
            break
        except OSError:
            assert time.monotonic() < deadline, "".join(s.output)
            time.sleep(0.05)
    r = redis.Redis.from_url(redis_url)
    wait_until(
        lambda: r.exists("t") and r.xinfo_stream("t")["entries-added"] >= 300,
        DEADLINE,
        what="300 entries",
    )
    assert r.xlen("t") < 300  # --maxlen 5: trimmed (approximately)
    s.proc.send_signal(signal.SIGINT)
    assert s.wait_exit() == 0, "".join(s.output)
    assert "Traceback" not in "".join(s.output)
    assert r.ping()  # a Redis we did not start is left alone


def test_serve_port_taken(serve: type[Serve]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = serve("--port", str(port), "--redis-url", "redis://127.0.0.1:1/0")
        code = s.wait_exit()
    out = "".join(s.output)
    assert code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in out
    assert "Traceback" not in out


def test_serve_redis_unreachable(serve: type[Serve]) -> None:
    port = free_port()
    s = serve("--redis-url", f"redis://127.0.0.1:{port}/0")
    code = s.wait_exit()
    out = "".join(s.output)
    assert code == 1
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in out
    assert "Traceback" not in out


def test_serve_bad_arguments(serve: type[Serve]) -> None:
    s = serve("--maxlen", "-3")
    assert s.wait_exit() == 2
    assert "must be >= 0" in "".join(s.output)


def test_cli_help_lists_serve() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastredis", "--help"],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    ).stdout
    assert "serve" in out


# -- rough edges: ports, sizes, passwords, an early Ctrl-C ------------------------------

SECRET = "s3cret-pass"


@pytest.fixture(scope="module")
def secret_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis that requires SECRET, on TCP and on a unix socket."""
    sock = tmp_path_factory.mktemp("unix") / "redis.sock"
    extra = ("--unixsocket", str(sock), "--unixsocketperm", "700")
    with EmbeddedRedis(password=SECRET, extra_args=extra) as server:
        server.unix_path = sock  # type: ignore[attr-defined]
        yield server


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_port_0_announces_the_port_it_listens_on(serve: type[Serve], redis_url: str) -> None:
    s = serve("--port", "0", REDIS_URL=redis_url)
    api = s.wait_line("API: ")
    port = int(api.split("http://localhost:", 1)[1].split()[0])
    assert port != 0
    wait_until(lambda: _answers(port) or s.proc.poll() is not None, DEADLINE, what="the API")
    assert _answers(port), "".join(s.output)
    assert f"http://localhost:{port}/graphql" in s.wait_line("GraphQL playground: ")


@pytest.mark.parametrize("port", ["99999", "-5", "http"])
def test_port_out_of_range_is_refused(serve: type[Serve], port: str) -> None:
    s = serve("--port", port)
    assert s.wait_exit() == 2
    out = "".join(s.output)
    assert f"a TCP port is 0-65535 (0: any free port), not '{port}'" in out
    assert "Traceback" not in out and "API:" not in out


def test_max_message_size_from_the_environment_takes_units(
    serve: type[Serve], redis_url: str
) -> None:
    from fastredis.cli import build_parser
    from fastredis.server.run.settings import Settings

    flag = build_parser().parse_args(["serve", "--max-message-size", "64MiB"])
    env = Settings.from_env({"FASTREDIS_MAX_MESSAGE_SIZE": "64MiB"})
    assert flag.max_message_size == env.max_message_size == 64 * 2**20
    s = serve(REDIS_URL=redis_url, FASTREDIS_MAX_MESSAGE_SIZE="1KiB")
    s.wait_line("API: ")
    wait_until(lambda: _answers(s.port), DEADLINE, what="the API")
    with connect(f"ws://127.0.0.1:{s.port}/data/big/push?ack=1") as ws:
        ws.send(json.dumps([1000]))
        ws.send(b"x" * 1000)
        assert len(json.loads(ws.recv(timeout=DEADLINE))) == 1
        ws.send(json.dumps([2000]))
        ws.send(b"x" * 2000)
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=DEADLINE)
    assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1009


def test_a_bad_size_in_the_environment_is_one_line(serve: type[Serve], redis_url: str) -> None:
    s = serve(REDIS_URL=redis_url, FASTREDIS_MAX_MESSAGE_SIZE="lots")
    assert s.wait_exit() == 1
    out = "".join(s.output)
    assert "FASTREDIS_MAX_MESSAGE_SIZE: not a size in bytes" in out and "Traceback" not in out


def _redis_urls(server: EmbeddedRedis) -> list[str]:
    tcp = f"{server.host}:{server.port}"
    return [
        f"redis://{tcp}/0?password={SECRET}",
        f"redis://default:{SECRET}@{tcp}/0",
        f"unix://{server.unix_path}?db=0&password={SECRET}",  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize("form", ["query", "userinfo", "unix"])
def test_banner_never_shows_the_redis_password(
    serve: type[Serve], secret_redis: EmbeddedRedis, form: str
) -> None:
    url = dict(zip(["query", "userinfo", "unix"], _redis_urls(secret_redis), strict=True))[form]
    s = serve("--redis-url", url)
    line = s.wait_line("Redis: ")
    s.wait_line("API: ")
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit() == 0, "".join(s.output)
    assert "***" in line
    assert SECRET not in "".join(s.output)


def test_a_redis_that_needs_a_password_says_so(
    serve: type[Serve], secret_redis: EmbeddedRedis
) -> None:
    tcp = f"{secret_redis.host}:{secret_redis.port}"
    s = serve("--redis-url", f"redis://{tcp}/0")
    assert s.wait_exit() == 1
    out = "".join(s.output)
    assert f"Redis at redis://{tcp}/0 needs a password" in out
    assert "redis://:PASSWORD@HOST:PORT/0" in out and "REDIS_URL" in out
    assert "HELLO" not in out and "Traceback" not in out

    s = serve("--redis-url", f"redis://:wrong-one@{tcp}/0")
    assert s.wait_exit() == 1
    out = "".join(s.output)
    assert "refused the user name or password" in out and "wrong-one" not in out


def _catches(pid: int, sig: int) -> bool:
    """True once process `pid` has a handler for `sig` (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(
        int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt")
    )
    return bool(mask >> (sig - 1) & 1)


def test_ctrl_c_at_once_prints_no_traceback(serve: type[Serve]) -> None:
    """SIGINT as soon as the command handles signals (SIGTERM caught: Python itself
    catches only SIGINT), before the embedded Valkey is even started."""
    s = serve()
    wait_until(
        lambda: _catches(s.proc.pid, signal.SIGTERM) or s.proc.poll() is not None,
        DEADLINE,
        what="fastredis serve to handle signals",
    )
    s.proc.send_signal(signal.SIGINT)
    code = s.wait_exit()
    out = "".join(s.output)
    assert code in (0, 130), out
    assert "Traceback" not in out


def test_ctrl_c_while_the_app_loads_stops_the_embedded_valkey(serve: type[Serve]) -> None:
    s = serve()
    line = s.wait_line("Redis: embedded Valkey")  # the app and uvicorn are imported next
    pid = int(line.split("(pid ")[1].split(")")[0])
    s.proc.send_signal(signal.SIGINT)
    assert s.wait_exit() == 0
    out = "".join(s.output)
    assert "Traceback" not in out and "embedded Valkey stopped" in out
    wait_until(lambda: process_gone(pid), DEADLINE, what=f"process {pid} to exit")


# -- the embedded Valkey: --data-dir, --embedded-port ------------------------------------


def _push_acked(port: int, sid: str, data: bytes) -> str:
    wait_until(lambda: _answers(port), DEADLINE, what="the API")
    with connect(f"ws://127.0.0.1:{port}/data/{sid}/push?ack=1") as ws:
        ws.send(json.dumps([len(data)]))
        ws.send(data)
        [entry_id] = json.loads(ws.recv(timeout=DEADLINE))
    return entry_id


def test_data_dir_keeps_the_data_for_the_next_start(serve: type[Serve], tmp_path: Path) -> None:
    data_dir = tmp_path / "valkey"
    valkey_port = free_port()
    s = serve("--data-dir", str(data_dir), "--embedded-port", str(valkey_port))
    line = s.wait_line("Redis: embedded Valkey")
    assert f"127.0.0.1:{valkey_port}/0, data kept in {data_dir}" in line
    _push_acked(s.port, "kept", b"survives a restart")
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit() == 0, "".join(s.output)

    again = serve("--data-dir", str(data_dir))
    again.wait_line("API: ")
    wait_until(lambda: _answers(again.port), DEADLINE, what="the API")
    resp = httpx.get(f"http://127.0.0.1:{again.port}/data/kept?last_entry_id=0", timeout=10)
    assert resp.content == b"survives a restart", resp.text


def test_without_data_dir_the_embedded_server_forgets(serve: type[Serve]) -> None:
    s = serve()
    assert s.wait_line("Redis: embedded Valkey").rstrip().endswith(", data not kept")


def test_embedded_options_with_a_redis_url_are_refused(serve: type[Serve], redis_url: str) -> None:
    s = serve("--redis-url", redis_url, "--data-dir", "/tmp/x")
    assert s.wait_exit() == 1
    assert "--data-dir and --embedded-port are for the embedded Valkey" in "".join(s.output)


# -- serve --workers N ------------------------------------------------------------------


@pytest.mark.parametrize("balance", ["reuseport", "shared"])
def test_two_workers_share_one_valkey_and_both_serve(serve: type[Serve], balance: str) -> None:
    import psutil

    s = serve("--workers", "2", "--balance", balance)
    valkey = int(s.wait_line("Redis: embedded Valkey").split("(pid ")[1].split(")")[0])
    pids = [int(p) for p in s.wait_line("workers: 2").split("pids ")[1].split()]
    assert len(pids) == 2 and s.proc.pid not in pids
    wait_until(lambda: _answers(s.port), DEADLINE, what="the workers")
    base = f"ws://127.0.0.1:{s.port}/data/w"
    socks = [connect(f"{base}/push?ack=1", compression=None, legacy=True) for _ in range(20)]
    try:
        for i, ws in enumerate(socks):  # one entry through each connection
            ws.send(json.dumps([1]))
            ws.send(str(i % 10).encode())
            assert len(json.loads(ws.recv(timeout=DEADLINE))) == 1
        held = {
            pid: sum(
                c.status == "ESTABLISHED" and c.laddr.port == s.port
                for c in psutil.Process(pid).net_connections()
            )
            for pid in pids
        }
        assert sum(held.values()) == 20, held
        if balance == "reuseport":  # the kernel's hash: all 20 on one worker is 2**-19
            assert all(held.values()), held  # both workers serve
        # every entry, whichever worker wrote it, through connections of either worker
        with connect(f"{base}/pull?last_entry_id=0&count=100", compression=None) as puller:
            header = json.loads(puller.recv(timeout=DEADLINE))
            assert len(header) == 20
    finally:
        for ws in socks:
            ws.close()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait_exit() == 0, "".join(s.output)
    for pid in [*pids, valkey]:
        wait_until(lambda pid=pid: process_gone(pid), DEADLINE, what=f"process {pid} to exit")
    assert "Traceback" not in "".join(s.output)


def test_redis_max_connections_flag_environment_and_floor(serve: type[Serve]) -> None:
    from fastredis.cli import build_parser
    from fastredis.server.run.settings import ConnectionBudget, Settings

    flag = build_parser().parse_args(["serve", "--redis-max-connections", "12"])
    assert flag.redis_max_connections == 12
    env = Settings.from_env({"FASTREDIS_REDIS_MAX_CONNECTIONS": "12"})
    assert env.redis_max_connections == 12
    assert Settings().redis_max_connections == 32
    # what the process may open is split between its fixed users and requests
    budget = ConnectionBudget.split(32)
    assert (
        budget.writers, budget.tail, budget.catch_up, budget.parking, budget.pumps, budget.other
    ) == (4, 16, 4, 1, 2, 5)  # fmt: skip
    assert ConnectionBudget.split(8).pumps == 0  # the smallest budget has none
    s = serve("--redis-max-connections", "3")
    assert s.wait_exit() == 1
    out = "".join(s.output)
    assert "redis_max_connections must be >= 8" in out and "Traceback" not in out


@pytest.mark.parametrize("balance", ["reuseport", "shared"])
def test_a_killed_worker_is_named_and_the_others_stop(serve: type[Serve], balance: str) -> None:
    s = serve("--workers", "2", "--balance", balance)
    pids = [int(p) for p in s.wait_line("workers: 2").split("pids ")[1].split()]
    wait_until(lambda: _answers(s.port), DEADLINE, what="the workers")
    os.kill(pids[1], signal.SIGKILL)
    assert s.wait_exit() == 1, "".join(s.output)
    out = "".join(s.output)
    assert f"worker 2 of 2 (pid {pids[1]}) was killed (SIGKILL): stopping the others" in out
    assert "Traceback" not in out and "IndexError" not in out
    wait_until(lambda: process_gone(pids[0]), DEADLINE, what="the other worker to stop")


def test_producer_ttl_from_the_flag_or_the_environment(serve: type[Serve]) -> None:
    from fastredis.cli import build_parser
    from fastredis.server.run.settings import Settings

    assert build_parser().parse_args(["serve", "--producer-ttl", "90"]).producer_ttl == 90
    assert Settings.from_env({"FASTREDIS_PRODUCER_TTL": "90"}).producer_ttl == 90
    assert Settings.from_env({}).producer_ttl == 3600
    s = serve("--producer-ttl", "0")
    assert s.wait_exit() == 2
    assert "must be > 0 seconds: '0'" in "".join(s.output)
