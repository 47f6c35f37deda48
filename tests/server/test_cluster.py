"""The server on a Redis Cluster (3 primaries + 3 replicas): the Redis Streamer README's push and
pull snippets as written, multi-stream pulls over several slots, atomic pushes within
one slot and a clear refusal across slots, REST and GraphQL `sids` over every primary."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from support.live_server import LiveServer
from support.streamer_snippets import RECEIVE_SNIPPET, SEND_SNIPPET, load_snippet
from support.waiting import wait_until

from fastredis.embedded import EmbeddedCluster
from fastredis.server import Settings, create_app

DEADLINE = 10.0


@pytest.fixture(scope="module")
def server(redis_cluster: EmbeddedCluster) -> Iterator[LiveServer]:
    # a cluster node's URL, nothing else: the server notices cluster mode itself
    settings = Settings(redis_url=redis_cluster.url, maxlen=100_000)
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture
def r(cluster_url: str) -> Iterator[redis.RedisCluster]:
    with redis.RedisCluster.from_url(cluster_url) as client:
        yield client


def ws_url(server: LiveServer, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def connect(url: str) -> Any:
    return websockets.connect(url, open_timeout=DEADLINE, max_size=None)


async def recv(ws: Any) -> Any:
    return await asyncio.wait_for(ws.recv(), DEADLINE)


def blocked_pulls(r: redis.RedisCluster) -> int:
    """Connections parked in a blocking XREAD, over every primary."""
    per_node = r.client_list(target_nodes=redis.RedisCluster.PRIMARIES)
    clients = [c for node in per_node.values() for c in node]
    return sum(1 for c in clients if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


async def test_readme_snippets_over_several_slots(server: LiveServer, r) -> None:
    sids = ["glf", "cam", "{cam1}:rgb"]
    assert len({r.keyslot(s) for s in sids}) == 3
    received: list[tuple[str, str, bytes]] = []
    receive = load_snippet(
        RECEIVE_SNIPPET, server, do_something_with_data=lambda *x: received.append(x)
    )["receive_data"]
    payloads = iter([b"one", b"two", b"three"])
    send = load_snippet(
        SEND_SNIPPET, server, generate_some_data=lambda: next(payloads), serialize_bytes=bytes
    )["send_data"]
    hub = server.server.config.app.state.hub
    for sid in sids:
        await asyncio.to_thread(wait_until, lambda: not hub.members, DEADLINE)
        receiving = asyncio.ensure_future(receive("+".join(sids)))  # one pull over 3 slots
        # its `$` is fixed once its subscription is entered (the pull then waits, parked)
        await asyncio.to_thread(wait_until, lambda: bool(hub.members), DEADLINE)
        await send(sid)
        await asyncio.wait_for(receiving, DEADLINE)
    assert [(s, d) for s, _t, d in received] == list(
        zip(sids, [b"one", b"two", b"three"], strict=True)
    )
    for sid, t, data in received:
        assert r.xrange(sid) == [(t.encode(), {b"d": data})]


async def test_pull_several_slots_merges_per_stream(server: LiveServer, r) -> None:
    for i in range(3):
        for sid in ("a", "b", "c"):
            r.xadd(sid, {"d": f"{sid}{i}"})
    url = ws_url(server, "/data/a+b+c/pull?last_entry_id=0&count=10")
    async with connect(url) as ws:
        header = json.loads(await recv(ws))
        data = await recv(ws)
    offsets = [h[2] for h in header] + [len(data)]
    got = [(h[0], data[offsets[i] : offsets[i + 1]]) for i, h in enumerate(header)]
    assert got == [(s, f"{s}{i}".encode()) for s in ("a", "b", "c") for i in range(3)]


async def test_push_is_atomic_within_a_slot_and_refused_across(server: LiveServer, r) -> None:
    url = ws_url(server, "/data/{cam1}:rgb/push?ack=1")
    async with connect(url) as ws:  # entries of two tagged streams: one atomic write
        await ws.send(json.dumps([["{cam1}:rgb", 3], ["{cam1}:depth", 8]]))
        await ws.send(b"rgbdepth")
        ids = json.loads(await recv(ws))
    assert len(ids) == 2
    assert r.xrange("{cam1}:rgb")[0][1] == {b"d": b"rgb"}
    assert r.xrange("{cam1}:depth")[0][1] == {b"d": b"depth"}
    assert r.keyslot("x") != r.keyslot("y")
    async with connect(ws_url(server, "/data/x/push?ack=1")) as ws:
        await ws.send(json.dumps([["x", 1], ["y", 3]]))
        await ws.send(b"xyy")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "different Redis Cluster slots" in closed.value.rcvd.reason
    assert not r.exists("x") and not r.exists("y")  # nothing partial


async def test_rest_and_graphql_sids_over_every_primary(server: LiveServer, r) -> None:
    base = f"http://{server.host}:{server.port}"
    sids = [f"rest-{i}" for i in range(12)]
    nodes = {r.get_node_from_key(s).name for s in sids}
    assert len(nodes) == 3
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as http:
        for sid in sids:
            posted = await http.post(f"/data/{sid}", content=sid.encode())
            assert posted.status_code < 300, posted.text
        got = await http.get(f"/data/{sids[5]}", params={"last_entry_id": "0"})
        assert got.status_code == 200 and got.content == sids[5].encode()
        refused = await http.post("/data/x+y", content=b"to both")  # x, y: two slots
        tagged = await http.post("/data/{t}a+{t}b", content=b"to both")  # one slot
        answer = await http.post("/graphql", json={"query": "{ sids }"})
    assert sorted(answer.json()["data"]["sids"]) == sorted([*sids, "{t}a", "{t}b"])  # all primaries
    assert refused.status_code == 400
    assert "different Redis Cluster slots" in refused.json()["error"]
    assert not r.exists("x") and not r.exists("y")
    assert tagged.status_code == 200 and r.xlen("{t}a") == r.xlen("{t}b") == 1


def test_the_client_unchanged(server: LiveServer, r) -> None:
    from fastredis.client import Client

    url = f"http://{server.host}:{server.port}"
    with Client(url) as c:
        ids = c.push("{cam1}:rgb+{cam1}:depth", [b"1", b"2"], ack=True)  # one slot: atomic
        assert len(ids) == 4
        c.push("p", b"p1")
        c.push("q", b"q1")
        with c.pull("p+q+{cam1}:rgb", last_entry_id="0", count=10) as pull:
            got: list = []
            while len(got) < 4:
                batch = pull.recv_batch(timeout=DEADLINE)
                assert batch is not None
                got += batch
    assert sorted((sid, d) for sid, _, d in got) == [
        ("p", b"p1"), ("q", b"q1"), ("{cam1}:rgb", b"1"), ("{cam1}:rgb", b"2")
    ]  # fmt: skip
    assert r.xlen("{cam1}:depth") == 2


def test_serve_redis_cluster_flag(redis_cluster: EmbeddedCluster, r) -> None:
    """`fastredis serve --redis-url NODE --redis-cluster`: told, not asked."""
    import os
    import subprocess
    import sys

    from fastredis.embedded import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "FASTREDIS_"))}
    args = ["serve", "--port", str(port), "--redis-url", redis_cluster.url, "--redis-cluster"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastredis", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, what="the server answering /readyz")  # a process start
        posted = httpx.post(f"http://127.0.0.1:{port}/data/{{f}}a+{{f}}b", content=b"z")
        assert posted.status_code == 200, posted.text
        assert r.xlen("{f}a") == r.xlen("{f}b") == 1
    finally:
        proc.terminate()
        proc.wait(DEADLINE)


async def test_idle_pulls_park_and_a_new_entry_still_reaches_its_pull(
    server: LiveServer, r
) -> None:
    """100 idle pulls of streams of their own: they park (one read of them all, made
    again and again), none holds a blocking read while it waits, and a new entry of any
    of them reaches its pull. Before, each idle stream's read blocked one of the tail
    connections for 250 ms in turn: with 200 idle pulls a new entry took up to 2 s."""
    hub = server.server.config.app.state.hub
    n = 100

    def parked() -> int:
        return sum(1 for g in hub.parking.parked if g.key[0][0].startswith("idle"))

    pulls = [
        await connect(ws_url(server, f"/data/idle{k}/pull?block=0")).__aenter__() for k in range(n)
    ]
    try:
        await asyncio.to_thread(wait_until, lambda: parked() == n, DEADLINE, what="all parked")
        assert blocked_pulls(r) == 0
        for k in (0, n // 2, n - 1):
            eid = r.xadd(f"idle{k}", {"d": str(k)}).decode()
            header = json.loads(await recv(pulls[k]))
            assert [h[1] for h in header] == [eid]
            assert await recv(pulls[k]) == str(k).encode()
    finally:
        await asyncio.gather(*(ws.close() for ws in pulls))


async def test_resume_and_epochs_on_a_cluster(server: LiveServer, r) -> None:
    """A stream's epoch lives in its slot (written with the stream's first entry by one
    script), for a plain name and a hash-tagged one; resume reads it over several slots."""
    ids = {}
    for sid in ("plain", "{cam}:rgb"):
        async with connect(ws_url(server, f"/data/{sid}/push?ack=1")) as push:
            await push.send(json.dumps([[sid, 1]]))
            await push.send(b"x")
            ids[sid] = json.loads(await recv(push))[0]
    assert r.get("XEPOCH:{plain}") and r.get("XEPOCH:{cam}:rgb")
    url = ws_url(server, "/data/plain+{cam}:rgb/pull?resume=1&last_entry_id=0")
    async with connect(url) as ws:
        resume = json.loads(await recv(ws))["resume"]
    epochs = f"{r.get('XEPOCH:{plain}').decode()}+{r.get('XEPOCH:{cam}:rgb').decode()}"
    assert resume == {
        "from": "0-0+0-0", "recovered": True,
        "first_id": f"{ids['plain']}+{ids['{cam}:rgb']}", "epoch": epochs,
    }  # fmt: skip
