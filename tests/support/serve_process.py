"""`fastredis serve` as a subprocess (not a test module): `Serve`, its output read line
by line; `ServeProcess`, on a fixed port, that a test kills and restarts."""

from __future__ import annotations

import http.client
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from fastredis.embedded import free_port
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


def python_env(root: Path = ROOT, **extra: str) -> dict[str, str]:
    """This environment without REDIS_URL/FASTREDIS_*, checkout `root` (this one)
    first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "FASTREDIS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Serve:
    """`python -m fastredis serve ARGS` with its output read line by line."""

    def __init__(self, *args: str, **env: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastredis", "serve", "--port", str(self.port), *args],
            env=python_env(**env),
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

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Until the API answers (the process failing fails the test)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                if httpx.get(f"{self.http_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, "".join(self.output)
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.05)


def started(*args: str, **env: str) -> Iterator[Serve]:
    """One served server, for a fixture (killed at the end)."""
    s = Serve(*args, **env)
    try:
        yield s
    finally:
        s.kill()


def tracked_serves() -> Iterator[type[Serve]]:
    """A `Serve` class whose processes are all killed when the generator is closed (the
    body of the `serve` fixture)."""
    started: list[Serve] = []

    class Tracked(Serve):
        def __init__(self, *args: str, **env: str) -> None:
            super().__init__(*args, **env)
            started.append(self)

    try:
        yield Tracked
    finally:  # also when the generator is closed
        for s in started:
            s.kill()


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


class ServeProcess:
    """One server process on `port` (the same across restarts) over `redis_url`, run
    from checkout `root` (this one by default)."""

    def __init__(
        self, redis_url: str, *args: str, port: int | None = None, root: Path = ROOT
    ) -> None:
        self.redis_url = redis_url
        self.args = args
        self.port = port or free_port()
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = DEADLINE) -> ServeProcess:
        cmd = [sys.executable, "-m", "fastredis", "serve", "--port", str(self.port)]
        cmd += ["--redis-url", self.redis_url, "--log-level", "warning", *self.args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=python_env(self.root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        proc = self.proc
        wait_until(lambda: _healthy(self.port) or proc.poll() is not None, timeout, "the server up")
        if proc.poll() is not None:
            raise RuntimeError(f"fastredis serve exited with {proc.returncode}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEADLINE) -> None:
        """Send `sig` (SIGKILL: kill -9) and wait for the process to end."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(signal.SIGKILL)
