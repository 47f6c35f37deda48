"""`$` is fixed when the client's socket opens: an entry added as soon as the client sees
its pull, GraphQL subscription, blocking GET or MJPEG stream open is delivered, every
time (issue 17.1). Entries are added by XADD and by the server's own push (ack awaited).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from support.images import frame
from support.live_server import LiveServer, make_server_app
from support.waiting import wait_until
from websockets.sync.client import connect as sync_connect

from fastredis.embedded import EmbeddedRedis
from fastredis.server.endpoints.mjpeg import BOUNDARY

REPEATS = 100
DEADLINE = 10.0


@pytest.fixture(scope="module")
def live(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    with LiveServer(make_server_app(redis_server.url)) as server:
        yield server


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


async def _pull_header(ws: Any) -> list[Any]:
    header = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
    await asyncio.wait_for(ws.recv(), DEADLINE)  # the payloads
    return header


async def test_pull_gets_what_xadd_adds_once_open(live: LiveServer, r: redis.Redis) -> None:
    r.xadd("s", {"d": b"before"})
    missed = []
    for i in range(REPEATS):
        async with websockets.connect(f"{live.ws_url}/data/s/pull?block=0") as ws:
            eid = r.xadd("s", {"d": f"e{i}".encode()}).decode()
            header = await _pull_header(ws)
            if header[0][1] != eid:
                missed.append((eid, header))
    assert missed == []


async def test_pull_gets_what_a_push_adds_once_open(live: LiveServer, r: redis.Redis) -> None:
    missed = []
    async with websockets.connect(f"{live.ws_url}/data/s/push?ack=1") as push:
        for i in range(REPEATS):
            async with websockets.connect(f"{live.ws_url}/data/s/pull?block=0") as ws:
                await push.send(json.dumps([["s", 1]]))
                await push.send(b"x")
                (eid,) = json.loads(await asyncio.wait_for(push.recv(), DEADLINE))
                header = await _pull_header(ws)
                if header[0][1] != eid:
                    missed.append((i, eid, header))
    assert missed == []


def test_graphql_subscription_gets_what_is_added_once_open(
    live: LiveServer, r: redis.Redis
) -> None:
    """The subscription's streams are known only from its `subscribe` message; `$` is
    fixed no later than the socket's opening, so an entry added right after the
    subscribe message is sent is delivered."""
    query = 'subscription { data(sids: ["g"]) { sid time } }'
    r.xadd("g", {"d": b"before"})
    missed = []
    for i in range(REPEATS):
        protocol = "graphql-transport-ws"
        with sync_connect(live.ws_url + "/graphql", subprotocols=[protocol]) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(ws.recv(timeout=DEADLINE))["type"] == "connection_ack"
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            eid = r.xadd("g", {"d": f"e{i}".encode()}).decode()
            msg = json.loads(ws.recv(timeout=DEADLINE))
            if msg["payload"]["data"]["data"]["time"] != eid:
                missed.append((eid, msg))
    assert missed == []


def test_blocking_get_gets_what_is_added_once_it_waits(live: LiveServer, r: redis.Redis) -> None:
    """A blocking GET's `$` is fixed before it waits (the client sees nothing before
    the answer, so the test waits for the server's subscriber instead)."""
    hub = live.server.config.app.state.hub  # type: ignore[union-attr]
    r.xadd("b", {"d": b"before"})
    missed = []
    with httpx.Client(base_url=live.http_url, timeout=DEADLINE) as http:
        for i in range(REPEATS):
            answer: dict[str, httpx.Response] = {}

            def get(answer: dict[str, httpx.Response] = answer) -> None:
                answer["r"] = http.get("/data/b", params={"last_entry_id": "$", "block": 0})

            thread = threading.Thread(target=get)
            thread.start()
            wait_until(lambda: hub.members, DEADLINE, "the GET to wait")
            eid = r.xadd("b", {"d": f"e{i}".encode()}).decode()
            thread.join(DEADLINE)
            if json.loads(answer["r"].headers["entry-offset"])[0][1] != eid:
                missed.append(eid)
            wait_until(lambda: not hub.members, DEADLINE, "the GET to end")
    assert missed == []


def test_mjpeg_shows_what_is_added_once_the_headers_came(live: LiveServer, r: redis.Redis) -> None:
    images = [frame(32, 24, shade=i) for i in range(20)]
    with httpx.Client(base_url=live.http_url, timeout=DEADLINE) as http:
        for image in images:
            with http.stream("GET", "/mjpeg/m") as resp:
                assert resp.status_code == 200
                r.xadd("m", {"d": image})
                seen = b""
                for chunk in resp.iter_raw():
                    seen += chunk
                    if image + f"\r\n--{BOUNDARY}".encode() in seen:
                        break
                assert image in seen


async def test_opens_at_once_share_the_round_trip_that_fixes_dollar(
    live: LiveServer, r: redis.Redis
) -> None:
    """Fifty pulls of ten streams opened at once: `$` of all of them is fixed in a few
    round trips, not one per pull, and each pull still gets what is added next."""
    starts = live.server.config.app.state.hub.starts  # type: ignore[union-attr]
    sids = [f"many{i % 10}" for i in range(50)]
    before = starts.fetches
    pulls = await asyncio.gather(
        *(websockets.connect(f"{live.ws_url}/data/{sid}/pull?block=0") for sid in sids)
    )
    fetches = starts.fetches - before
    try:
        ids = {sid: r.xadd(sid, {"d": b"x"}).decode() for sid in set(sids)}
        for sid, ws in zip(sids, pulls, strict=True):
            assert (await _pull_header(ws))[0][1] == ids[sid]
    finally:
        for ws in pulls:
            await ws.close()
    print(f"50 opens of 10 streams: {fetches} round trips to fix $")
    assert fetches < 25, fetches
