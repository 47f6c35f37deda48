"""Resume with an honest gap signal (issue 17.2): ``resume=1`` opens a pull with one
``{"resume": {...}}`` text frame; ``recovered`` is false when entries after the cursor
are gone (trimmed, deleted, the stream made anew, detected by its epoch); a reader that
falls behind a trim gets ``{"gap": {...}}`` before the entries that follow it; without
``resume=1`` nothing changes. GraphQL's data subscription gets the same as fields.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import websockets
from support.live_server import LiveServer, make_server_app
from websockets.sync.client import connect as sync_connect

from fastredis.embedded import EmbeddedRedis
from fastredis.ids import parse_id, previous_id

DEADLINE = 10.0


@pytest.fixture(scope="module")
def live(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    with LiveServer(make_server_app(redis_server.url)) as server:
        yield server


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


async def recv(ws: Any) -> Any:
    return await asyncio.wait_for(ws.recv(), DEADLINE)


async def resumed(ws: Any) -> dict[str, Any]:
    frame = json.loads(await recv(ws))
    assert list(frame) == ["resume"], frame
    return frame["resume"]


async def push(url: str, sid: str, n: int) -> list[str]:
    """`n` entries added through the server's own push (its writer), acked."""
    ids = []
    async with websockets.connect(f"{url}/data/{sid}/push?ack=1") as ws:
        for i in range(n):
            await ws.send(json.dumps([[sid, 1]]))
            await ws.send(bytes([i % 256]))
            ids += json.loads(await recv(ws))
    return ids


async def test_without_resume_the_first_frame_is_a_batch(live: LiveServer, r: redis.Redis) -> None:
    first = r.xadd("s", {"d": "a"})
    async with websockets.connect(f"{live.ws_url}/data/s/pull?last_entry_id=0") as ws:
        assert json.loads(await recv(ws)) == [["s", first, 0]]
        assert await recv(ws) == b"a"


async def test_resume_from_a_cursor_nothing_lost(live: LiveServer, r: redis.Redis) -> None:
    ids = await push(live.ws_url, "s", 5)
    url = f"{live.ws_url}/data/s/pull?resume=1&last_entry_id={ids[1]}&count=10"
    async with websockets.connect(url) as ws:
        info = await resumed(ws)
        assert info["from"] == ids[1] and info["recovered"] is True
        assert info["first_id"] == ids[0]
        epoch = info["epoch"]
        assert epoch and epoch == r.get("XEPOCH:{s}")
        header = json.loads(await recv(ws))
        assert [eid for _sid, eid, _start in header] == ids[2:]
        await recv(ws)
    # the same epoch when resuming again: nothing was made anew
    url += f"&epoch={epoch}"
    async with websockets.connect(url) as ws:
        assert (await resumed(ws))["recovered"] is True


async def test_resume_dollar_starts_at_the_end(live: LiveServer, r: redis.Redis) -> None:
    ids = await push(live.ws_url, "s", 2)
    async with websockets.connect(f"{live.ws_url}/data/s/pull?resume=1") as ws:
        info = await resumed(ws)
        assert info["from"] == ids[-1] and info["recovered"] is True
        new = r.xadd("s", {"d": "x"})
        assert json.loads(await recv(ws)) == [["s", new, 0]]


async def test_trimmed_past_the_cursor_is_not_recovered_and_the_rest_comes(
    live: LiveServer, r: redis.Redis
) -> None:
    """No cap on recovery: everything the stream still holds after the cursor, in
    batches."""
    ids = [r.xadd("s", {"d": str(i)}) for i in range(3000)]
    r.xtrim("s", minid=ids[1000], approximate=False)
    url = f"{live.ws_url}/data/s/pull?resume=1&last_entry_id={ids[10]}&count=500"
    async with websockets.connect(url) as ws:
        info = await resumed(ws)
        assert info["recovered"] is False and info["first_id"] == ids[1000]
        got: list[str] = []
        # the first read says where the loss is
        assert json.loads(await recv(ws)) == {"gap": {
            "sid": "s", "from": ids[10], "to": previous_id(*parse_id(ids[1000])),
            "next": ids[1000], "epoch": info["epoch"], "recreated": False,
        }}  # fmt: skip
        got: list[str] = []
        while len(got) < 2000:
            got += [eid for _sid, eid, _start in json.loads(await recv(ws))]
            await recv(ws)
    assert got == ids[1000:]


async def test_deleted_after_the_cursor_is_not_recovered(live: LiveServer, r: redis.Redis) -> None:
    ids = [r.xadd("s", {"d": str(i)}) for i in range(5)]
    r.xdel("s", ids[3])
    url = f"{live.ws_url}/data/s/pull?resume=1&last_entry_id={ids[1]}"
    async with websockets.connect(url) as ws:
        assert (await resumed(ws))["recovered"] is False
    url = f"{live.ws_url}/data/s/pull?resume=1&last_entry_id={ids[3]}"
    async with websockets.connect(url) as ws:
        assert (await resumed(ws))["recovered"] is True


async def test_a_stream_made_anew_has_a_new_epoch(live: LiveServer, r: redis.Redis) -> None:
    ids = await push(live.ws_url, "s", 3)
    async with websockets.connect(f"{live.ws_url}/data/s/pull?resume=1&last_entry_id=0") as ws:
        old = (await resumed(ws))["epoch"]
    r.delete("s")
    await push(live.ws_url, "s", 5)  # ids above the cursor: only the epoch tells
    url = f"{live.ws_url}/data/s/pull?resume=1&last_entry_id={ids[-1]}&epoch={old}"
    async with websockets.connect(url) as ws:
        info = await resumed(ws)
    assert info["recovered"] is False and info["epoch"] not in (None, old)


async def produce(url: str, path: str, header: list[Any], payload: bytes) -> list[str]:
    """One message pushed with ``producer=`` (exactly-once), acked: its ids."""
    async with websockets.connect(f"{url}/data/{path}/push?producer=p1") as ws:
        json.loads(await recv(ws))  # the producer's hello
        await ws.send(json.dumps(header))
        await ws.send(payload)
        ids: list[str] = json.loads(await recv(ws))
    return ids


@pytest.mark.parametrize(
    ("path", "header"),
    [("ps", [2]), ("pa+pb", [["pa", 1], ["pb", 2]])],  # one entry; a message of several
)
async def test_a_stream_made_anew_by_a_producer_has_a_new_epoch(
    live: LiveServer, r: redis.Redis, path: str, header: list[Any]
) -> None:
    sids = path.split("+")
    ids = await produce(live.ws_url, path, header, b"xy")
    epochs = [r.get(f"XEPOCH:{{{sid}}}") for sid in sids]
    assert all(epochs)  # stored by the write that created the streams
    url = f"{live.ws_url}/data/{path}/pull?resume=1&last_entry_id=0"
    async with websockets.connect(url) as ws:
        old = (await resumed(ws))["epoch"]
    assert old == "+".join(epochs)  # type: ignore[arg-type]
    r.delete(*sids)  # the epoch keys stay
    r.delete(*(k for k in r.keys("XPROD*")))  # a producer starting over
    await produce(live.ws_url, path, header, b"xy")  # ids above the cursor
    cursor = "+".join(ids[: len(sids)])
    url = f"{live.ws_url}/data/{path}/pull?resume=1&last_entry_id={cursor}&epoch={old}"
    async with websockets.connect(url) as ws:
        info = await resumed(ws)
    assert info["recovered"] is False
    assert all(e not in epochs for e in info["epoch"].split("+"))


async def test_a_deleted_streams_epoch_goes_when_the_server_looks(
    live: LiveServer, r: redis.Redis
) -> None:
    """Epoch keys do not outlive their stream: the server removes one when it finds its
    stream gone, so a stream made anew by other tools gets a fresh epoch."""
    first = r.xadd("gone", {"d": "x"})
    url = f"{live.ws_url}/data/gone/pull?resume=1&last_entry_id=0"
    async with websockets.connect(url) as ws:
        old = (await resumed(ws))["epoch"]
    assert old and r.get("XEPOCH:{gone}") == old
    r.delete("gone")
    url = f"{live.ws_url}/data/gone/pull?resume=1&last_entry_id={first}&epoch={old}"
    async with websockets.connect(url) as ws:
        assert (await resumed(ws))["recovered"] is False
    assert r.exists("XEPOCH:{gone}") == 0
    r.xadd("gone", {"d": "y"})  # made anew by another tool, ids above the cursor
    async with websockets.connect(url) as ws:
        info = await resumed(ws)
    assert info["recovered"] is False and info["epoch"] not in (None, old)


async def test_a_stream_written_by_others_gets_one_epoch(live: LiveServer, r: redis.Redis) -> None:
    r.xadd("other", {"d": "x"})
    epochs = []
    for _ in range(2):
        url = f"{live.ws_url}/data/other/pull?resume=1&last_entry_id=0"
        async with websockets.connect(url) as ws:
            epochs.append((await resumed(ws))["epoch"])
    assert epochs[0] and epochs[0] == epochs[1] == r.get("XEPOCH:{other}")


async def test_a_missing_stream_is_recovered_only_from_the_start(
    live: LiveServer, r: redis.Redis
) -> None:
    for cursor, recovered in (("0", True), ("5-0", False)):
        url = f"{live.ws_url}/data/none/pull?resume=1&last_entry_id={cursor}"
        async with websockets.connect(url) as ws:
            info = await resumed(ws)
        assert info == {"from": "0-0" if cursor == "0" else cursor, "recovered": recovered,
                        "first_id": None, "epoch": None}  # fmt: skip


async def test_several_streams_join_with_plus(live: LiveServer, r: redis.Redis) -> None:
    a, b = r.xadd("a", {"d": "1"}), r.xadd("b", {"d": "2"})
    url = f"{live.ws_url}/data/a+b/pull?resume=1&last_entry_id=0"
    async with websockets.connect(url) as ws:
        info = await resumed(ws)
    assert info["from"] == "0-0+0-0" and info["first_id"] == f"{a}+{b}"
    assert info["epoch"] == f"{r.get('XEPOCH:{a}')}+{r.get('XEPOCH:{b}')}"


async def test_a_reader_behind_a_trim_gets_a_gap_first(live: LiveServer, r: redis.Redis) -> None:
    """A slow reader (acks held back) whose next entries are trimmed meanwhile: a gap
    frame comes before the entries after it, and every id is delivered or in a gap."""
    ids = [r.xadd("s", {"d": str(i)}) for i in range(1000)]
    url = f"{live.ws_url}/data/s/pull?resume=1&last_entry_id=0&count=10&ack=1"
    got: list[str] = []
    gaps: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        assert (await resumed(ws))["recovered"] is True
        header = json.loads(await recv(ws))
        got += [eid for _sid, eid, _start in header]
        await recv(ws)
        r.xtrim("s", minid=ids[900], approximate=False)
        while not got or got[-1] != ids[-1]:
            await ws.send("ok")
            frame = json.loads(await recv(ws))
            while isinstance(frame, dict):
                gaps.append(frame["gap"])
                frame = json.loads(await recv(ws))
            got += [eid for _sid, eid, _start in frame]
            await recv(ws)
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap["sid"] == "s" and gap["next"] == ids[900]
    assert gap["to"] == previous_id(*parse_id(ids[900]))  # lost: within (from, to]
    assert got.index(gap["next"]) > 0 and got[got.index(gap["next"]) - 1] == gap["from"]
    lost = [i for i in ids if i not in got]
    assert all(parse_id(gap["from"]) < parse_id(i) <= parse_id(gap["to"]) for i in lost)
    assert got == sorted(got, key=parse_id) and len(set(got)) == len(got)


def test_graphql_data_resume_and_gap_fields(live: LiveServer, r: redis.Redis) -> None:
    ids = [r.xadd("g", {"d": str(i)}) for i in range(5)]
    r.xtrim("g", minid=ids[3], approximate=False)
    query = (
        f'subscription {{ data(sids: ["g"], lastEntryId: "{ids[0]}", resume: true) '
        "{ kind sid time resume { from recovered firstId epoch } } }"
    )
    with sync_connect(live.ws_url + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=DEADLINE))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        items = [json.loads(ws.recv(timeout=DEADLINE))["payload"]["data"]["data"]]
        while items[-1]["time"] != ids[-1]:
            items.append(json.loads(ws.recv(timeout=DEADLINE))["payload"]["data"]["data"])
    first = items[0]
    assert first["kind"] == "resume" and first["time"] == ids[0]
    assert first["resume"] == {
        "from": ids[0], "recovered": False, "firstId": ids[3], "epoch": r.get("XEPOCH:{g}")
    }  # fmt: skip
    assert [i["time"] for i in items if i["kind"] == "entry"] == ids[3:]


async def test_bad_epoch_and_epoch_without_resume_are_refused(live: LiveServer) -> None:
    for query, reason in (
        ("epoch=abc", "query parameter epoch is for resume=1 pulls"),
        ("resume=1&epoch=a%2Fb", "query parameter epoch: 'a/b' is not an epoch token"),
    ):
        async with websockets.connect(f"{live.ws_url}/data/s/pull?{query}") as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await recv(ws)
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, reason)
