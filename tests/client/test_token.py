"""`token=` of Client/AsyncClient and the CLI's --token / $FASTREDIS_TOKEN, against the
real app under uvicorn with access control: the token opens the sockets its scope
allows; without one, or out of scope, the error names the HTTP status and why."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import redis
from support.live_server import LiveServer

import fastredis
from fastredis.client import AsyncClient, Client, ClientError
from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

ROOT = Path(fastredis.__file__).resolve().parent.parent
SECRET = "client-token-tests-secret-0123456789ab"
API_KEY = "client-token-tests-key"


def token(read: list[str], write: list[str]) -> str:
    claims = {"streams": {"read": read, "write": write}, "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_server.url, api_keys=[API_KEY], jwt_secret=SECRET)
    with LiveServer(create_app(settings)) as live:
        yield live


def test_client_token(server: LiveServer, plain_redis: redis.Redis) -> None:
    with Client(server.ws_url, token=token(["cam:*"], ["cam:*"])) as c:
        assert len(c.push("cam:1", b"hello", ack=True) or []) == 1
        batch = c.pull("cam:1", last_entry_id="0").recv_batch(10)
        assert [e[2] for e in batch or []] == [b"hello"]
    with (
        Client(server.ws_url, token=token(["cam:*"], [])) as c,
        pytest.raises(ClientError, match=r"HTTP 403.*may not write stream 'cam:1'"),
    ):
        c.push("cam:1", b"refused")
    with Client(server.ws_url) as c, pytest.raises(ClientError, match=r"HTTP 401.*token"):
        c.pull("cam:1").recv_batch(10)
    assert plain_redis.xlen("cam:1") == 1


async def test_async_client_token(server: LiveServer, plain_redis: redis.Redis) -> None:
    async with AsyncClient(server.ws_url, token=API_KEY) as c:
        assert len(await c.push("payroll", [b"a", b"b"], ack=True) or []) == 2
        batch = await c.pull("payroll", last_entry_id="0", count=2).recv_batch()
        assert [e[2] for e in batch or []] == [b"a", b"b"]
    async with AsyncClient(server.ws_url, token=token(["cam:*"], [])) as c:
        with pytest.raises(ClientError, match=r"HTTP 403.*may not read stream 'payroll'"):
            await c.pull("payroll").recv_batch()
    async with AsyncClient(server.ws_url, token="wrong") as c:
        with pytest.raises(ClientError, match=r"HTTP 401.*neither an API key nor a JWT"):
            await c.push("payroll", b"x")
    assert plain_redis.xlen("payroll") == 2


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FASTREDIS_")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "fastredis", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
        cwd=ROOT,
    )


def test_cli_token_option_and_environment(server: LiveServer, plain_redis: redis.Redis) -> None:
    url = ["--url", server.ws_url]
    done = _run("push-increment", "cam:1", "--count", "3", *url, "--token", API_KEY)
    assert done.returncode == 0, done.stderr
    done = _run(
        "pull-raw", "cam:1", "--count", "3", "--last-entry-id", "0", *url,
        FASTREDIS_TOKEN=token(["cam:*"], []),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line.split(" | ")[1] for line in done.stdout.splitlines()] == ["0", "1", "2"]
    done = _run("push-increment", "cam:1", "--count", "1", *url)
    assert done.returncode == 1
    assert "HTTP 401" in done.stderr and "Traceback" not in done.stderr
    assert plain_redis.xlen("cam:1") == 3
