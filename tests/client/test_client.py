"""fastredis.client (sync and asyncio) against the real app under uvicorn and Redis."""

from __future__ import annotations

import json
import os

import pytest
import redis
from support.live_server import server_fixture, url_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.client import (
    AsyncClient,
    AsyncPuller,
    Client,
    ClientError,
    Puller,
    ServerClosed,
    ServerUnreachable,
    pull_url,
    push_url,
    split_frame,
)
from fastredis.embedded import free_port
from fastredis.ids import id_ms


def _stored(plain: redis.Redis, sid: str, n: int | None = None) -> list[tuple[str, bytes]]:
    """The entries of `sid`; with `n`, first wait until there are n (a push without
    ack returns before the server has written it)."""
    if n is not None:
        wait_until(lambda: plain.xlen(sid) >= n, what=f"{n} entries in {sid}")
    return [(i.decode(), f[b"d"]) for i, f in plain.xrange(sid)]


# -- pure helpers ---------------------------------------------------------------------


def test_urls() -> None:
    assert push_url("ws://h:1", "a+b") == "ws://h:1/data/a+b/push"
    assert push_url("http://h:1/", "x", ack=1) == "ws://h:1/data/x/push?ack=1"
    assert push_url("https://h/prefix", "cam:1") == "wss://h/prefix/data/cam:1/push"
    assert pull_url("h:2", "s", last_entry_id="$", count=None, latest=True) == (
        "ws://h:2/data/s/pull?last_entry_id=%24&latest=1"
    )
    assert pull_url("ws://h", "a b/c") == "ws://h/data/a%20b%2Fc/pull"
    with pytest.raises(ValueError, match="not a websocket"):
        push_url("ftp://h", "s")


def test_split_frame_matches_the_streamer_slicing() -> None:
    header = [["a", "1-0", 0], ["b", "1-1", 3], ["a", "2-0", 3]]
    assert split_frame(header, b"abcdefg") == [
        ("a", "1-0", b"abc"),
        ("b", "1-1", b""),
        ("a", "2-0", b"defg"),
    ]
    assert split_frame([], b"") == []
    assert id_ms("1638125133432-7") == 1638125133432
    assert id_ms(b"5-0") == 5


# -- sync ------------------------------------------------------------------------------


def test_sync_push_pull_round_trip(url: str, plain_redis: redis.Redis) -> None:
    payloads = [b"", b"x", bytes(range(256)) * 100, "text é".encode()]
    with Client(url) as c:
        assert c.push("s", payloads[0]) is None
        c.push("s", payloads[1:3])  # two entries, one message
        c.push("s", "text é")  # str is sent as UTF-8
        stored = _stored(plain_redis, "s", len(payloads))
        assert [d for _, d in stored] == payloads
        got = []
        for entry in c.pull("s", last_entry_id="0", count=3, block=1000):
            got.append(entry)
            if len(got) == len(payloads):
                break
    assert got == [("s", i, d) for i, d in stored]


def test_sync_push_ack_returns_ids(url: str, plain_redis: redis.Redis) -> None:
    with Client(url) as c:
        ids = c.push("s", [b"a", b"b"], ack=True)
        assert ids == [i for i, _ in _stored(plain_redis, "s")]
        assert c.push("s", b"c", ack=True) == [_stored(plain_redis, "s")[-1][0]]


def test_sync_pull_batches_and_latest(url: str, plain_redis: redis.Redis) -> None:
    for i in range(10):
        plain_redis.xadd("s", {"d": str(i).encode()})
    ids = [i for i, _ in _stored(plain_redis, "s")]
    with Client(url) as c:
        batch = next(iter(c.pull_batches("s", last_entry_id="0", count=4)))
        assert [(e[1], e[2]) for e in batch] == [(ids[i], str(i).encode()) for i in range(4)]
        with c.pull("s", last_entry_id="0", latest=True) as p:
            first = p.recv_batch(timeout=10)
        assert first is not None and first[-1][1:] == (ids[-1], b"9")


def test_sync_multi_stream(url: str, plain_redis: redis.Redis) -> None:
    with Client(url) as c:
        c.push("a+b", [b"1", b"2"])
        assert [d for _, d in _stored(plain_redis, "a", 2)] == [b"1", b"2"]
        assert [d for _, d in _stored(plain_redis, "b", 2)] == [b"1", b"2"]
        with c.pull("a+b", last_entry_id="0", count=10) as p:
            got = []
            while len(got) < 4:
                batch = p.recv_batch(timeout=10)
                assert batch is not None
                got += batch
    assert sorted((sid, d) for sid, _, d in got) == [
        ("a", b"1"), ("a", b"2"), ("b", b"1"), ("b", b"2")
    ]  # fmt: skip


def test_sync_large_payload(url: str, plain_redis: redis.Redis) -> None:
    big = os.urandom(5 * 1024 * 1024)  # above websockets' default 1 MiB limit
    with Client(url) as c:
        c.push("big", big)
        with c.pull("big", last_entry_id="0") as p:
            batch = p.recv_batch(timeout=20)
    assert batch is not None and batch[0][2] == big


def test_sync_pull_ack(url: str, plain_redis: redis.Redis) -> None:
    for i in range(3):
        plain_redis.xadd("s", {"d": str(i).encode()})
    with Client(url) as c, c.pull("s", last_entry_id="0", ack=True) as p:
        got = [p.recv_batch(timeout=10) for _ in range(3)]
    assert [b[0][2] for b in got if b] == [b"0", b"1", b"2"]


def test_sync_idle_pull_sends_empty_batches(url: str) -> None:
    with Client(url) as c, c.pull("quiet", block=50) as p:
        assert p.recv_batch(timeout=10) == []


# -- asyncio ---------------------------------------------------------------------------


async def test_async_push_pull_round_trip(url: str, plain_redis: redis.Redis) -> None:
    async with AsyncClient(url) as c:
        await c.push("s", b"one")
        await c.push("s", [b"two", b"three"])
        ids = await c.push("s", [b"four"], ack=True)  # another socket: may come first
        stored = _stored(plain_redis, "s", 4)
        assert sorted(d for _, d in stored) == [b"four", b"one", b"three", b"two"]
        assert ids == [i for i, d in stored if d == b"four"]
        got = []
        async for entry in c.pull("s", last_entry_id="0", count=2):
            got.append(entry)
            if len(got) == 4:
                break
        assert got == [("s", i, d) for i, d in stored]
        batches = c.pull_batches("s", last_entry_id="0", count=10)
        batch = await anext(batches)
        assert [d for _, _, d in batch] == [d for _, d in stored]
        await batches.aclose()


async def test_async_pusher_and_puller_objects(url: str, plain_redis: redis.Redis) -> None:
    async with AsyncClient(url) as c:
        async with c.pusher("s", ack=True) as pusher:
            assert len(await pusher.push([b"a", b"b", b"c"])) == 3
        async with AsyncPuller(url, "s", last_entry_id="0", count=5) as puller:
            batch = await puller.recv_batch()
    assert [d for _, _, d in batch or []] == [b"a", b"b", b"c"]


# -- errors ----------------------------------------------------------------------------


def _dead_url() -> str:
    return f"ws://127.0.0.1:{free_port()}"


def test_unreachable_server_sync() -> None:
    dead = _dead_url()
    with Client(dead) as c:
        with pytest.raises(ServerUnreachable, match="cannot reach the fastredis server") as err:
            c.push("s", b"x")
        assert dead in str(err.value)
        assert isinstance(err.value, ConnectionError)
        with pytest.raises(ServerUnreachable, match=dead):
            next(iter(c.pull("s")))


async def test_unreachable_server_async() -> None:
    dead = _dead_url()
    async with AsyncClient(dead) as c:
        with pytest.raises(ServerUnreachable, match=dead):
            await c.push("s", b"x")
        with pytest.raises(ServerUnreachable, match=dead):
            await anext(aiter(c.pull("s")))


def test_server_rejection_is_a_clear_error(url: str) -> None:
    with pytest.raises(ServerClosed) as err, Puller(url, "s", count=0) as p:
        p.recv_batch(timeout=10)
    assert err.value.code == 1008 and "count" in err.value.reason
    with (
        pytest.raises(ClientError, match=r"refused the websocket: HTTP 4\d\d"),
        Client(url.replace("ws", "http")) as c,
    ):
        c.pusher("").push(b"x")  # /data//push is no route


def test_a_bad_push_closes_only_that_socket(url: str, plain_redis: redis.Redis) -> None:
    from websockets.sync.client import connect

    with Client(url) as c:
        with connect(url + "/data/s/push", compression=None) as raw:
            raw.send(json.dumps([5]))
            raw.send(b"abc")  # offsets do not match the payload
            with pytest.raises(Exception) as closed:
                raw.recv(timeout=10)
        assert getattr(closed.value, "rcvd", None) is not None
        assert closed.value.rcvd.code == 1007
        c.push("s", b"fine")
    assert [d for _, d in _stored(plain_redis, "s", 1)] == [b"fine"]
