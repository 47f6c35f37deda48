"""Debian's nginx as a reverse proxy in front of a test's server (not a test module).

It runs unprivileged-style in a temporary directory: its config, pid, logs and temp
files all live there, it listens on a free port of 127.0.0.1, and it is stopped with
the test. The site's config is the one docs/guides/deploying.md shows, so the
documented config is the tested one.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
from pathlib import Path

from fastredis.embedded import free_port
from support.waiting import wait_until

NGINX = "/usr/sbin/nginx"
DOC = Path(__file__).resolve().parents[2] / "docs" / "guides" / "deploying.md"
DOC_UPSTREAM = "127.0.0.1:8000"  # where the documented config sends requests
_BLOCK = re.compile(r"^```nginx\n(?P<body>.*?)^```$", re.M | re.S)


def documented_site() -> str:
    """The nginx block of docs/guides/deploying.md that proxies a sub-path."""
    blocks = [m["body"] for m in _BLOCK.finditer(DOC.read_text("utf-8"))]
    sites = [b for b in blocks if "location /fastredis/" in b]
    assert len(sites) == 1, f"one nginx site with location /fastredis/ in {DOC}"
    return sites[0]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Nginx:
    """nginx on 127.0.0.1:`port` with the documented site, sending to `upstream`."""

    def __init__(self, directory: Path, upstream: str) -> None:
        if not os.path.exists(NGINX):
            raise AssertionError(
                f"{NGINX} is missing: the deploying tests need Debian's nginx "
                "(`apt-get install -y nginx`, as .ci/run does)"
            )
        self.dir = directory
        self.port = free_port()
        site = documented_site().replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        assert DOC_UPSTREAM in site
        site = site.replace(DOC_UPSTREAM, upstream)
        # as root, its workers would become `nobody`, who may not enter pytest's tmp
        user = f"user {pwd.getpwuid(0).pw_name};" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {directory / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf = directory / "nginx.conf"
        self.conf.write_text(
            f"{user}\nworker_processes 1;\ndaemon off;\npid {directory / 'nginx.pid'};\n"
            f"error_log {directory / 'error.log'} info;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n{site}\n}}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Nginx:
        args = [NGINX, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(
            lambda: _accepts(self.port) or self.proc is None or self.proc.poll() is not None,
            20,
            what="nginx to listen",
        )
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"nginx did not start: {err}\n{self.log()}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
