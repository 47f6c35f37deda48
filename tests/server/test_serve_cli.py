"""`fastredis serve` end to end, as a subprocess: the embedded Valkey starts, the API
answers, SIGTERM/SIGINT stop both; a taken port or an unreachable Redis gives a clear
message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from support.waiting import process_gone, wait_until
from websockets.sync.client import connect

from fastredis.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "FASTREDIS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Serve:
    """`python -m fastredis serve ARGS` with its output read line by line."""

    def __init__(self, *args: str, **env: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastredis", "serve", "--port", str(self.port), *args],
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_line(self, start: str) -> str:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            self.output.append(line)
            if line.startswith(start):
                return line
            if line == "":
                break
        raise AssertionError(f"no line starting {start!r}; output:\n{''.join(self.output)}")

    def wait_exit(self) -> int:
        code = self.proc.wait(DEADLINE)
        while True:
            line = self.lines.get(timeout=DEADLINE)
            if line == "":
                break
            self.output.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Tracked(Serve):
        def __init__(self, *args: str, **env: str) -> None:
            super().__init__(*args, **env)
            started.append(self)

    yield Tracked
    for s in started:
        s.kill()


def test_serve_with_embedded_valkey_stops_it_on_sigterm(serve: type[Serve]) -> None:
    s = serve()
    redis_line = s.wait_line("Redis: embedded Valkey")
    pid = int(redis_line.split("(pid ")[1].split(")")[0])
    url = redis_line.rsplit(" at ", 1)[1].strip()
    api_line = s.wait_line("API: ")
    assert f"http://127.0.0.1:{s.port}" in api_line
    assert f"http://127.0.0.1:{s.port}/graphql" in s.wait_line("GraphQL playground: ")
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
    wait_until(lambda: r.xinfo_stream("t")["entries-added"] >= 300, DEADLINE, what="300 entries")
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
        env=_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    ).stdout
    assert "serve" in out
