"""`fastredis serve` as a subprocess, its output read line by line (not a test module)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from fastredis.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


def python_env(**extra: str) -> dict[str, str]:
    """This environment without REDIS_URL/FASTREDIS_*, this checkout first on the path."""
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
