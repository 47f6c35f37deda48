"""Tokens never reach the server's log: `fastredis serve --log-level debug` as a
subprocess (uvicorn's access log and the websockets library's handshake dump both
print request lines and headers there), driven with tokens in ?token= and in the
Authorization header, over HTTP and websockets, accepted and refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest
from support.waiting import wait_until
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "log-test-secret-0123456789abcdef0123"
API_KEY = "log-test-api-key-0123456789"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "FASTREDIS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["FASTREDIS_JWT_SECRET"] = SECRET
    return env


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, headers={"authorization": f"Bearer {API_KEY}"}).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("level", ["debug", "trace"])
def test_tokens_never_appear_in_the_log(
    redis_server: EmbeddedRedis, tmp_path: Path, level: str
) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    jwt_token = jwt.encode({"streams": {"read": ["*"], "write": ["*"]}}, SECRET, "HS256")
    wrong = "wrong-token-that-must-not-be-logged"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastredis", "serve", "--port", str(port),
             "--redis-url", redis_server.url, "--api-key", API_KEY, "--log-level", level],
            env=_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            http, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
            wait_until(lambda: _answers(http + "/"), 30, what="the server to answer")
            for token in (jwt_token, API_KEY):
                assert httpx.get(f"{http}/data/cam?token={token}&count=1").status_code == 200
                bearer = {"authorization": f"Bearer {token}"}
                assert httpx.post(f"{http}/data/cam", content=b"x", headers=bearer).is_success
                with connect(f"{ws}/data/cam/pull?block=10&token={token}") as sock:
                    assert sock.recv(10) == "[]"
                with connect(f"{ws}/data/cam/push", additional_headers=bearer):
                    pass
            assert httpx.get(f"{http}/data/cam?token={wrong}").status_code == 401
            with pytest.raises(InvalidStatus):
                connect(f"{ws}/data/cam/pull?token={wrong}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    text = log_path.read_text()
    assert "GET /data/cam?" in text and "/data/cam/pull?" in text  # requests are logged
    assert "< authorization: [redacted]" in text.lower()  # and headers, at debug
    for secret in (jwt_token, API_KEY, wrong, jwt_token.split(".")[2]):
        assert secret not in text
