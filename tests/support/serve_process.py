"""`fastredis serve` as a subprocess on a fixed port, that a test kills and restarts."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path

from fastredis.embedded import free_port
from support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


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
    """One server process on `port` (the same across restarts) over `redis_url`."""

    def __init__(self, redis_url: str, *args: str, port: int | None = None) -> None:
        self.redis_url = redis_url
        self.args = args
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServeProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "fastredis", "serve", "--port", str(self.port)]
        cmd += ["--redis-url", self.redis_url, "--log-level", "warning", *self.args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        proc = self.proc
        wait_until(lambda: _healthy(self.port) or proc.poll() is not None, timeout, "the server up")
        if proc.poll() is not None:
            raise RuntimeError(f"fastredis serve exited with {proc.returncode}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
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
