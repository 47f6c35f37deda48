"""The clients Redis Streamer users already run, reproduced byte for byte from its sample
client (tests/api.py) and server: they read END offsets from the pull header
(``entries[previous_end:end]``), the REST headers ``x-offsets`` / ``x-last-entry-id``,
and the GraphQL stream field ``id``. fastredis keeps start offsets by default; the
``offsets=end`` query parameter or ``fastredis serve --offsets end`` serves those clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from support.live_server import LiveServer, server_fixture  # noqa: F401
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

Entry = tuple[str, str, bytes]


def unpack_end_offsets(header: list[list[object]], entries: bytes) -> list[Entry]:
    """What the deployed client does with a pull header: every offset is where an entry's
    payload ends, the first starts at 0."""
    sids, ts, offsets = tuple(zip(*header, strict=True)) or ((),) * 3
    starts = (0, *offsets)
    return [
        (str(sid), str(t), entries[start:end])  # type: ignore[misc]
        for sid, t, start, end in zip(sids, ts, starts, offsets, strict=False)
    ]


@pytest.fixture
def end_server(redis_server: EmbeddedRedis, redis_url: str) -> Iterator[LiveServer]:
    """`fastredis serve --offsets end`."""
    with LiveServer(create_app(Settings(redis_url=redis_url, offsets="end"))) as live:
        yield live


def fill(r: redis.Redis) -> list[Entry]:
    added = []
    for i, size in enumerate((3, 0, 10, 1)):
        for sid in ("a", "b"):
            payload = bytes([65 + i]) * size
            added.append((sid, r.xadd(sid, {"d": payload}).decode(), payload))
    return added


def pull(url: str) -> tuple[list[list[object]], bytes]:
    with connect(url, open_timeout=20) as ws:
        header = json.loads(ws.recv(20))
        data = ws.recv(20)
    assert isinstance(data, bytes)
    return header, data


def test_the_serve_option_gives_unchanged_clients_end_offsets(
    end_server: LiveServer, plain_redis: redis.Redis
) -> None:
    added = fill(plain_redis)
    header, data = pull(f"{end_server.ws_url}/data/a+b/pull?last_entry_id=0&count=4")
    assert header[-1][2] == len(data)  # the last offset is the end of the payload
    assert sorted(unpack_end_offsets(header, data)) == sorted(added)


def test_the_query_parameter_asks_for_end_offsets_on_a_default_server(
    server: LiveServer, redis_url: str, plain_redis: redis.Redis
) -> None:
    added = [e for e in fill(plain_redis) if e[0] == "a"]
    header, data = pull(f"{server.ws_url}/data/a/pull?last_entry_id=0&count=4&offsets=end")
    assert unpack_end_offsets(header, data) == added
    header, data = pull(f"{server.ws_url}/data/a/pull?last_entry_id=0&count=4")
    assert [row[2] for row in header] == [0, 3, 3, 13]  # the default: start offsets


def test_one_entry_per_frame_has_its_own_end(
    end_server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("s", {"d": b"12345"})
    plain_redis.xadd("s", {"d": b"678"})
    with connect(f"{end_server.ws_url}/data/s/pull?last_entry_id=0", open_timeout=20) as ws:
        for payload in (b"12345", b"678"):
            header = json.loads(ws.recv(20))
            data = ws.recv(20)
            assert header[0][2] == len(payload) and data == payload


def test_rest_reads_with_the_header_names_the_clients_use(
    end_server: LiveServer, plain_redis: redis.Redis
) -> None:
    added = [e for e in fill(plain_redis) if e[0] == "a"]
    got: list[Entry] = []
    last_entry_id = "0"
    with httpx.Client(base_url=end_server.http_url, timeout=20) as http:
        while True:  # the client's pull_image_rest loop
            r = http.get("/data/a", params={"last_entry_id": last_entry_id, "block": 100})
            r.raise_for_status()
            last_entry_id = r.headers["x-last-entry-id"]
            entries = unpack_end_offsets(json.loads(r.headers["x-offsets"]), r.content)
            if not entries:
                break
            got += entries
    assert got == added
    assert r.headers["entry-offset"] == "[]" and r.headers["last-entry-id"] == added[-1][1]


def test_default_rest_answers_are_unchanged(
    server: LiveServer, redis_url: str, plain_redis: redis.Redis
) -> None:
    fill(plain_redis)
    with httpx.Client(base_url=server.http_url, timeout=20) as http:
        r = http.get("/data/a", params={"last_entry_id": "0", "count": 2})
        assert "x-offsets" not in r.headers and json.loads(r.headers["entry-offset"])[1][2] == 3
        r = http.get("/data/a", params={"last_entry_id": "0", "count": 2, "offsets": "end"})
        assert [row[2] for row in json.loads(r.headers["x-offsets"])] == [3, 3]
        bad = http.get("/data/a", params={"offsets": "middle"})
        assert bad.status_code == 400 and "start, end" in bad.json()["error"]


def test_graphql_streams_answer_their_id(
    server: LiveServer, redis_url: str, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("cam", {"d": b"x"})
    query = "query GetStreams { streams { id lastEntryId } }"
    with httpx.Client(base_url=server.http_url, timeout=20) as http:
        answer = http.post("/graphql", json={"query": query, "variables": {}}).json()
    assert answer["data"]["streams"][0]["id"] == "cam"


def test_a_bad_offsets_value_closes_the_pull(server: LiveServer, redis_url: str) -> None:
    url = f"{server.ws_url}/data/a/pull?offsets=both"
    with connect(url, open_timeout=20) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "offsets='both'" in closed.value.rcvd.reason
