"""REST (GET/POST /data/{sid}), CORS and the app without a Redis URL, through
Starlette's TestClient (a real socket adds nothing here) and a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

MAX_MESSAGE = 4096


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(redis_url=redis_url, max_message_size=MAX_MESSAGE))
    with TestClient(app) as c:
        yield c


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as c:
        yield c


def entries(response: object) -> list[tuple[str, str, bytes]]:
    header = json.loads(response.headers["entry-offset"])  # type: ignore[attr-defined]
    body = response.content  # type: ignore[attr-defined]
    starts = [start for _, _, start in header]
    ends = [*starts[1:], None]
    return [(sid, t, body[s:e]) for (sid, t, s), e in zip(header, ends, strict=True)]


def test_get_defaults_to_the_newest_entry(client: TestClient, r: redis.Redis) -> None:
    ids = [r.xadd("s", {"d": f"v{i}"}).decode() for i in range(3)]
    resp = client.get("/data/s")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/octet-stream"
    assert entries(resp) == [("s", ids[2], b"v2")]
    assert resp.headers["last-entry-id"] == ids[2]


def test_get_count_last_entry_id_and_cursor(client: TestClient, r: redis.Redis) -> None:
    ids = [r.xadd("s", {"d": f"v{i}"}).decode() for i in range(5)]
    resp = client.get("/data/s", params={"last_entry_id": "0", "count": 2})
    assert entries(resp) == [("s", ids[0], b"v0"), ("s", ids[1], b"v1")]
    resp = client.get("/data/s", params={"last_entry_id": resp.headers["last-entry-id"]})
    assert entries(resp) == [("s", ids[2], b"v2")]
    resp = client.get("/data/s", params={"last_entry_id": "*", "count": 2})
    assert [d for _, _, d in entries(resp)] == [b"v3", b"v4"]


def test_get_latest_and_multi_stream(client: TestClient, r: redis.Redis) -> None:
    for i in range(4):
        r.xadd("a", {"d": f"a{i}"})
        r.xadd("b", {"d": f"b{i}"})
    resp = client.get("/data/a+b", params={"last_entry_id": "0", "latest": 1})
    assert [(s, d) for s, _, d in entries(resp)] == [("a", b"a3"), ("b", b"b3")]
    cursor = resp.headers["last-entry-id"]
    assert cursor.count("+") == 1
    r.xadd("b", {"d": "b4"})
    resp = client.get("/data/a+b", params={"last_entry_id": cursor, "count": 10})
    assert [(s, d) for s, _, d in entries(resp)] == [("b", b"b4")]


def test_get_block(client: TestClient, r: redis.Redis) -> None:
    resp = client.get("/data/s", params={"last_entry_id": "$", "block": 100})
    assert resp.status_code == 200
    assert json.loads(resp.headers["entry-offset"]) == []
    assert resp.content == b""
    resp = client.get("/data/s", params={"last_entry_id": "$"})  # no block: no wait
    assert json.loads(resp.headers["entry-offset"]) == []


def test_post_multipart_is_atomic(client: TestClient, r: redis.Redis) -> None:
    files = [("entries", ("a.bin", b"one")), ("entries", ("b.bin", b"\x00two"))]
    resp = client.post("/data/a+b", files=files)
    assert resp.status_code == 200, resp.text
    ids = resp.json()
    assert len(ids) == 4
    assert [e[1][b"d"] for e in r.xrange("a")] == [b"one", b"\x00two"]
    assert [e[1][b"d"] for e in r.xrange("b")] == [b"one", b"\x00two"]
    assert ids[0] == r.xrange("a")[0][0].decode()

    r.set("text", "x")
    resp = client.post("/data/c+text", files=files)
    assert resp.status_code == 409
    assert resp.json()["error"] == "stream 'text' holds a string, not a stream; nothing written"
    assert not r.exists("c")


def test_post_raw_body(client: TestClient, r: redis.Redis) -> None:
    resp = client.post("/data/s", content=b"raw bytes")
    assert resp.status_code == 200
    [entry_id] = resp.json()
    assert r.xrange("s") == [(entry_id.encode(), {b"d": b"raw bytes"})]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [
        ("get", "/data/s?bogus=1", {}, 400, "unknown query parameter"),
        ("get", "/data/s?count=0", {}, 400, "range"),
        ("get", "/data/s?last_entry_id=x-y", {}, 400, "last_entry_id"),
        ("get", "/data/a++b", {}, 400, "empty name"),
        ("post", "/data/s?ack=1", {"content": b"x"}, 400, "unknown query parameter"),
        ("post", "/data/s", {"content": b"x" * (MAX_MESSAGE + 1)}, 413, "limit"),
        (
            "post",
            "/data/s",
            {"files": [("e", ("big", b"x" * (MAX_MESSAGE + 1)))]},
            413,
            "limit",
        ),
    ],
)
def test_rest_bad_input(
    client: TestClient,
    r: redis.Redis,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    words: str,
) -> None:
    resp = getattr(client, method)(path, **kwargs)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]
    assert r.dbsize() == 0


def test_get_of_a_key_that_is_not_a_stream(client: TestClient, r: redis.Redis) -> None:
    r.set("text", "x")
    resp = client.get("/data/text")
    assert resp.status_code == 409
    assert resp.json()["error"] == "stream 'text' holds a string, not a stream"


def test_cors_origins(redis_url: str) -> None:
    app = create_app(Settings(redis_url=redis_url, cors_origins=["http://allowed.example"]))
    with TestClient(app) as c:
        resp = c.get("/data/s", headers={"origin": "http://allowed.example"})
        assert resp.headers["access-control-allow-origin"] == "http://allowed.example"
        assert "entry-offset" in resp.headers["access-control-expose-headers"]
        resp = c.get("/data/s", headers={"origin": "http://other.example"})
        assert "access-control-allow-origin" not in resp.headers
        with (
            pytest.raises(WebSocketDenialResponse) as info,
            c.websocket_connect("/data/s/pull", headers={"origin": "http://other.example"}),
        ):
            pass
        assert info.value.status_code == 403 and "origin" in info.value.json()["error"]
        with c.websocket_connect(
            "/data/s/pull?block=10", headers={"origin": "http://allowed.example"}
        ) as ws:
            assert ws.receive_text() == "[]"


def test_index_names_the_endpoints(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["push"] == "ws /data/{sid}/push"
    assert body["graphql"] == "/graphql"


def test_settings_from_env() -> None:
    env = {
        "REDIS_URL": "redis://example:1/2",
        "FASTREDIS_STREAM_MAXLEN": "50",
        "FASTREDIS_MAX_MESSAGE_SIZE": "1024",
        "FASTREDIS_CORS_ORIGINS": "http://a, http://b",
    }
    s = Settings.from_env(env)
    assert (s.redis_url, s.maxlen, s.max_message_size) == ("redis://example:1/2", 50, 1024)
    assert s.cors_origins == ["http://a", "http://b"]
    assert Settings.from_env(env, maxlen=7, redis_url=None).maxlen == 7
    assert Settings.from_env({}).maxlen == 1000
    with pytest.raises(ValueError, match="FASTREDIS_STREAM_MAXLEN"):
        Settings.from_env({"FASTREDIS_STREAM_MAXLEN": "many"})
    assert Settings().client_params["decode_responses"] is False


def test_app_without_a_url_runs_an_embedded_server() -> None:
    app = create_app(Settings(redis_url=None))
    with TestClient(app) as c:
        embedded = app.state.embedded
        assert embedded is not None and embedded.process.poll() is None
        assert c.post("/data/s", content=b"x").status_code == 200
        assert entries(c.get("/data/s"))[0][2] == b"x"
        process = embedded.process
    assert process.poll() is not None  # stopped with the app


def test_redis_going_away(private_redis: EmbeddedRedis) -> None:
    """Redis gone: REST answers 503, sockets close with 1011, the server goes on."""
    app = create_app(Settings(redis_url=private_redis.url))
    with TestClient(app) as c:
        assert c.post("/data/s", content=b"x").status_code == 200
        private_redis.kill()
        resp = c.get("/data/s")
        assert resp.status_code == 503 and "Redis unavailable" in resp.json()["error"]
        assert c.post("/data/s", content=b"x").status_code == 503
        with c.websocket_connect("/data/s/pull") as ws, pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1011 and "Redis unavailable" in info.value.reason
        with c.websocket_connect("/data/s/push") as ws, pytest.raises(WebSocketDisconnect) as info:
            ws.send_text("[1]")
            ws.send_bytes(b"x")
            ws.receive_text()
        assert info.value.code == 1011
        private_redis.start()  # same port: the server recovers by itself
        assert c.post("/data/s", content=b"y").status_code == 200


def test_redis_over_a_unix_socket(tmp_path) -> None:
    path = tmp_path / "valkey.sock"
    with EmbeddedRedis(extra_args=("--unixsocket", str(path))) as server:
        app = create_app(Settings(redis_url=f"unix://{path}"))
        with TestClient(app) as c:
            resp = c.post("/data/s", content=b"over unix")
            assert resp.status_code == 200, resp.text
            with c.websocket_connect("/data/s/pull?last_entry_id=0") as ws:
                header = json.loads(ws.receive_text())
                assert [sid for sid, _id, _start in header] == ["s"]
                assert ws.receive_bytes() == b"over unix"
        with redis.Redis.from_url(server.url) as r:
            assert r.xlen("s") == 1
