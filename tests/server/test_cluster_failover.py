"""A primary of the cluster killed during a stream and replaced by its replica: acked
pushes survive (all but what asynchronous replication had not shipped yet, which is
measured and reported), the pull over the stream resumes after the topology change."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis
import websockets
from support.live_server import LiveServer

from fastredis.embedded import EmbeddedCluster
from fastredis.server import Settings, create_app

SID = "{cam1}:rgb"
DEADLINE = 30.0  # every wait of this test; a failover takes ~3-5 s here


async def _push_until(url: str, stop: asyncio.Event, acked: list[tuple[float, str]]) -> int:
    """Push one entry per message with ack, reconnecting whenever the server closes the
    socket (Redis unavailable during the failover); returns how many sockets closed."""
    closed, n = 0, 0
    while not stop.is_set():
        try:
            async with websockets.connect(f"{url}/data/{SID}/push?ack=1") as ws:
                while not stop.is_set():
                    payload = f"m{n}".encode()
                    await ws.send(json.dumps([len(payload)]))
                    await ws.send(payload)
                    [eid] = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
                    acked.append((time.monotonic(), eid))
                    n += 1
                    await asyncio.sleep(0.002)
        except (websockets.ConnectionClosed, OSError):
            closed += 1
            await asyncio.sleep(0.1)
    return closed


async def _pull(url: str, got: list[str], stop: asyncio.Event) -> None:
    async with websockets.connect(f"{url}/data/{SID}/pull?last_entry_id=0&count=100") as ws:
        while not stop.is_set():
            header = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
            await asyncio.wait_for(ws.recv(), DEADLINE)
            got += [eid for _sid, eid, _off in header]


async def test_failover_during_push_and_pull(
    private_cluster: EmbeddedCluster, record_property: Any
) -> None:
    settings = Settings(redis_url=private_cluster.url, maxlen=0, pull_block_ms=500)
    with LiveServer(create_app(settings)) as server:
        url = f"ws://{server.host}:{server.port}"
        stop, acked, pulled = asyncio.Event(), [], []
        pusher = asyncio.ensure_future(_push_until(url, stop, acked))
        puller = asyncio.ensure_future(_pull(url, pulled, stop))
        while len(acked) < 200:
            await asyncio.sleep(0.01)
        killed_at = time.monotonic()
        killed = await asyncio.to_thread(private_cluster.kill_primary, SID)
        await asyncio.to_thread(private_cluster.wait_failover, SID, killed, DEADLINE)
        promoted_at = time.monotonic()
        n_promoted = len(acked)
        deadline = time.monotonic() + DEADLINE
        while len(acked) < n_promoted + 200:  # pushes go on to the promoted replica
            assert time.monotonic() < deadline, "pushes did not resume after the failover"
            await asyncio.sleep(0.01)
        last = acked[-1][1]
        while last not in pulled:  # and so does the pull, on the same socket
            assert time.monotonic() < deadline, "the pull did not resume after the failover"
            await asyncio.sleep(0.01)
        stop.set()
        closed = await asyncio.wait_for(pusher, DEADLINE)
        await asyncio.wait_for(puller, DEADLINE)  # empty batches every 0.5 s: it sees stop

    with redis.RedisCluster.from_url(private_cluster.url) as client:
        stored = {eid.decode() for eid, _f in client.xrange(SID)}
    lost = [(t, eid) for t, eid in acked if eid not in stored]
    # Replication is asynchronous: only entries acked just before the kill may be lost;
    # none acked after the promotion is.
    assert all(t < promoted_at for t, _eid in lost)
    assert all(eid in stored for t, eid in acked if t >= promoted_at)
    assert len(lost) < len([1 for t, _eid in acked if t < killed_at])
    record_property("acked", len(acked))
    record_property("lost_acked", len(lost))
    record_property("push_sockets_closed", closed)
    record_property("failover_s", round(promoted_at - killed_at, 2))
    print(
        f"\nfailover: {len(acked)} acked pushes, {len(lost)} lost (async replication), "
        f"{closed} push sockets closed, promotion {promoted_at - killed_at:.1f} s after the kill"
    )


# The outage of the test below: longer than redis-py's own retries of a command (10,
# with a backoff capped at 1 s: ~5 s at most), shorter than FAILOVER_WAIT (15 s).
OUTAGE_S = 8.0


def _hold_failover(cluster: EmbeddedCluster, key: str) -> tuple[Any, redis.Redis]:
    """Write an entry to `key`'s primary and wait until its replica has it; stop that
    replica from taking over by itself. Returns (the primary, a client of the replica)."""
    primary = cluster.primary_of(key)
    with redis.Redis(host=primary.host, port=primary.port) as r:
        r.xadd(key, {"d": b"before"})
        replica_port = int(r.info("replication")["slave0"]["port"])
        assert r.execute_command("WAIT", 1, int(DEADLINE * 1000)) == 1
    replica = redis.Redis(host=primary.host, port=replica_port)
    replica.config_set("cluster-replica-no-failover", "yes")
    return primary, replica


async def test_handshakes_opened_during_an_outage_answer_after_the_failover(
    private_cluster: EmbeddedCluster,
) -> None:
    """A pull with resume=1 and a producer push opened while the primary of their stream
    is down: their first reads of the stream's state wait out the outage (retried as
    the cluster reads are, up to FAILOVER_WAIT) instead of failing when redis-py's
    retries run out; both answer once the replica took over, on the same sockets, and
    what the producer then pushes reaches the pull."""
    primary, replica = _hold_failover(private_cluster, SID)
    with redis.RedisCluster.from_url(private_cluster.url) as client:
        [(eid, _fields)] = client.xrange(SID)
        last = eid.decode()
    settings = Settings(redis_url=private_cluster.url, maxlen=0, pull_block_ms=500)
    with LiveServer(create_app(settings)) as server, replica:
        url = f"ws://{server.host}:{server.port}/data/{SID}"
        pull_url = f"{url}/pull?resume=1&last_entry_id={last}&count=10"
        push_url = f"{url}/push?producer=cam"
        await asyncio.to_thread(primary.kill)
        opens = [
            asyncio.ensure_future(websockets.connect(u, open_timeout=DEADLINE + OUTAGE_S))
            for u in (pull_url, push_url)
        ]
        try:
            await asyncio.sleep(OUTAGE_S)  # the outage: the sockets' first reads wait
            replica.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
            await asyncio.to_thread(private_cluster.wait_failover, SID, primary, DEADLINE)
            pull, push = await asyncio.gather(*opens)
        finally:
            for task in opens:
                if not task.done():
                    task.cancel()
        async with pull, push:
            resumed = json.loads(await asyncio.wait_for(pull.recv(), DEADLINE))
            assert resumed["resume"]["from"] == last
            assert resumed["resume"]["recovered"] is True
            hello = json.loads(await asyncio.wait_for(push.recv(), DEADLINE))
            assert hello["producer"] == "cam" and hello["committed"] == 0
            await push.send(json.dumps([5]))
            await push.send(b"after")
            [pushed] = json.loads(await asyncio.wait_for(push.recv(), DEADLINE))
            header = json.loads(await asyncio.wait_for(pull.recv(), DEADLINE))
            assert [eid for _sid, eid, _off in header] == [pushed]
            assert await asyncio.wait_for(pull.recv(), DEADLINE) == b"after"
