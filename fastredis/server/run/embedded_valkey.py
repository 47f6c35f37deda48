"""The embedded Valkey of `fastredis serve` (and of `create_app` without a Redis URL).

With access control on (an API key or a JWT option), it requires a random password: any
local process could otherwise read and write the protected streams on its port. The
password never leaves this process: it is on no command line, and shown URLs hide it.

`Watch` notices when it dies (see there for what then happens).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading

from fastredis.embedded import EmbeddedRedis, EmbeddedServerError
from fastredis.server.run.process import how_it_ended
from fastredis.server.run.settings import Settings

__all__ = ["Watch", "embedded_valkey", "server_url", "why_not_started"]


def embedded_valkey(
    settings: Settings, port: int | None = None, data_dir: str | None = None
) -> EmbeddedRedis:
    """The embedded Valkey for `settings` (not started yet): with a password when access
    control is on, and a private unix socket besides its TCP port (`server_url`)."""
    password = secrets.token_urlsafe(32) if settings.access_control else None
    return EmbeddedRedis(port=port, data_dir=data_dir, password=password, unix_socket=True)


def server_url(embedded: EmbeddedRedis) -> str:
    """The URL the server uses for its embedded Valkey: the unix socket, when it has
    one (the loopback TCP stack costs the server and Valkey together about a third
    more CPU per MB pulled: docs/benchmarks/wire.md), else the TCP port other clients
    use."""
    return embedded.unix_url or embedded.url


# a line of Valkey's log: "8340:M 04 Dec 2026 21:56:14.747 # Failed listening on ..."
_LOG_LINE = re.compile(r"^\d+:\w [^#*]*? # (.+)$", re.MULTILINE)


def why_not_started(error: EmbeddedServerError, port: int) -> str:
    """One line for a Valkey that did not start (its error carries its whole log)."""
    text = str(error)
    if "Address already in use" in text:
        return (
            f"port {port} on 127.0.0.1 is already in use (another server is running "
            "there): pick another --embedded-port, or leave it out for a free one"
        )
    warnings = _LOG_LINE.findall(text)
    return warnings[-1] if warnings else text.splitlines()[0]


class Watch:
    """Notices the embedded Valkey's death the moment it happens.

    Then the server says so once, on stderr, and stops itself: SIGTERM to its own
    process, so uvicorn (or the workers' supervisor) shuts down as on any SIGTERM, and
    `serve` exits with status 1 (`died` says why). It is not restarted: without
    --data-dir a new one would be empty, and with it would have lost what came after
    the last save; clients would see either as entries silently gone. A supervisor
    (systemd, Kubernetes, Docker's restart policy) restarting the whole server, which
    then reloads --data-dir, is the clearer story.
    """

    def __init__(self, embedded: EmbeddedRedis) -> None:
        self.died: str | None = None
        self._stopping = threading.Event()
        process, pid = embedded.process, embedded.pid
        assert process is not None, "watch a started server"
        threading.Thread(
            target=self._wait, args=(process, pid), name="valkey-watch", daemon=True
        ).start()

    def _wait(self, process: subprocess.Popen[bytes], pid: int) -> None:
        code = process.wait()
        if self._stopping.is_set():
            return
        self.died = f"the embedded Valkey (pid {pid}) {how_it_ended(code)}"
        print(
            f"fastredis serve: {self.died}; stopping the server (exit status 1)",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> None:
        """From now on its end is expected (the server is stopping it)."""
        self._stopping.set()
