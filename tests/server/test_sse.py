"""GET /sse/{sid} over a real socket (httpx streaming): events with entry ids, several
streams with a '+'-joined cursor id, resuming with Last-Event-ID / ?lastEventID=, the
gap event, text and base64 data, latest, keep-alive comments, one shared read for many
viewers, access rules, and bad requests."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
import redis
from support.live_server import LiveServer, server_fixture  # noqa: F401
from support.waiting import wait_until
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis
from fastredis.ids import parse_id
from fastredis.server import Settings, create_app
from fastredis.server.endpoints import sse

Event = dict[str, str]


class Events:
    """Parses a text/event-stream body into events ({"id", "event", "data"}) and
    comments, as EventSource does (data lines joined with LF)."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.comments: list[str] = []

    def next(self) -> Event:
        event: Event = {}
        data: list[str] = []
        for line in self.lines:
            if line == "":
                if data or event:
                    if data:
                        event["data"] = "\n".join(data)
                    return event
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            else:
                event[name] = value
        raise AssertionError("the event stream ended")

    def take(self, n: int) -> list[Event]:
        return [self.next() for _ in range(n)]


@pytest.fixture
def http(server: LiveServer, redis_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=20) as c:
        yield c


def later(action, delay: float = 0.3) -> None:  # type: ignore[no-untyped-def]
    """Run `action` in a thread once the stream is open (its `$` is fixed at open, so
    what is added after is delivered whenever it lands)."""
    threading.Timer(delay, action).start()


def test_each_entry_is_an_event_whose_id_is_the_entry_id(
    http: httpx.Client, plain_redis: redis.Redis
) -> None:
    old = plain_redis.xadd("cam", {"d": b"before"}).decode()
    with http.stream("GET", "/sse/cam") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        ids: list[str] = []
        later(lambda: ids.extend(plain_redis.xadd("cam", {"d": t}).decode() for t in (b"a", b"b")))
        events = Events(resp).take(2)
    assert [e["data"] for e in events] == ["a", "b"]  # from now on: not what was there
    assert [e["id"] for e in events] == ids and old not in ids
    assert all("event" not in e for e in events)  # "message": EventSource's onmessage


def test_text_keeps_line_breaks_and_binary_is_base64(
    http: httpx.Client, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("t", {"d": "one\ntwo ü".encode()}, id="1-0")
    plain_redis.xadd("t", {"d": b"\xff\xfe\x00"}, id="2-0")
    with http.stream("GET", "/sse/t?last_entry_id=0") as resp:
        text, binary = Events(resp).take(2)
    assert text["data"] == "one\ntwo ü"
    assert binary["event"] == "binary" and base64.b64decode(binary["data"]) == b"\xff\xfe\x00"
    with http.stream("GET", "/sse/t?last_entry_id=0&data=base64") as resp:
        events = Events(resp).take(2)
    assert [base64.b64decode(e["data"]) for e in events] == ["one\ntwo ü".encode(), b"\xff\xfe\x00"]
    assert all("event" not in e for e in events)


def test_several_streams_resume_from_the_joined_id(
    http: httpx.Client, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("a", {"d": b"a1"}, id="1-0")
    plain_redis.xadd("b", {"d": b"b1"}, id="2-0")
    plain_redis.xadd("a", {"d": b"a2"}, id="3-0")
    plain_redis.xadd("b", {"d": b"b2"}, id="4-0")
    with http.stream("GET", "/sse/a+b?last_entry_id=0") as resp:
        events = Events(resp).take(4)
    got = sorted((e["event"], e["data"]) for e in events)
    assert got == [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")]
    ids = [e["id"] for e in events]  # the id after each event covers both streams
    assert all(len(i.split("+")) == 2 for i in ids) and ids[-1] == "3-0+4-0"
    resume = ids[1]
    seen = {(e["event"], e["data"]) for e in events[:2]}
    with http.stream("GET", "/sse/a+b", headers={"Last-Event-ID": resume}) as resp:
        rest = Events(resp).take(2)
    assert seen.isdisjoint((e["event"], e["data"]) for e in rest)
    assert seen | {(e["event"], e["data"]) for e in rest} == set(got)


def test_resume_with_last_event_id_and_the_query(
    http: httpx.Client, plain_redis: redis.Redis
) -> None:
    ids = [plain_redis.xadd("r", {"d": str(i)}).decode() for i in range(4)]
    with http.stream("GET", f"/sse/r?lastEventID={ids[1]}") as resp:
        assert [e["data"] for e in Events(resp).take(2)] == ["2", "3"]
    # the header (a reconnecting EventSource) wins over the query it first opened with
    with http.stream("GET", f"/sse/r?lastEventID={ids[0]}", headers={"Last-Event-ID": ids[2]}) as r:
        assert Events(r).next() == {"id": ids[3], "data": "3"}


def test_a_resume_past_trimmed_entries_says_so_first(
    http: httpx.Client, plain_redis: redis.Redis
) -> None:
    ids = [plain_redis.xadd("g", {"d": str(i)}).decode() for i in range(5)]
    plain_redis.xtrim("g", maxlen=2, approximate=False)
    with http.stream("GET", f"/sse/g?lastEventID={ids[0]}") as resp:
        events = Events(resp)
        resume, gap = events.take(2)
        assert resume["event"] == "resume" and "id" not in resume
        assert json.loads(resume["data"])["recovered"] is False
        assert gap["event"] == "gap" and "id" not in gap  # notes do not move the cursor
        detail = json.loads(gap["data"])
        assert detail["sid"] == "g" and detail["from"] == ids[0]
        assert detail["next"] == ids[3] and detail["recreated"] is False
        assert [e["data"] for e in events.take(2)] == ["3", "4"]  # then what is there
    with http.stream("GET", f"/sse/g?lastEventID={ids[3]}") as resp:
        assert Events(resp).next() == {"id": ids[4], "data": "4"}  # nothing lost: no notes


def test_a_deleted_stream_is_not_recovered(http: httpx.Client, plain_redis: redis.Redis) -> None:
    old = plain_redis.xadd("del", {"d": b"x"}).decode()
    plain_redis.delete("del")
    with http.stream("GET", f"/sse/del?lastEventID={old}") as resp:
        events = Events(resp)
        resume = events.next()
        assert resume["event"] == "resume"
        assert json.loads(resume["data"])["recovered"] is False
        later(lambda: plain_redis.xadd("del", {"d": b"new"}))
        assert events.next()["data"] == "new"


def test_a_viewer_that_falls_behind_a_trim_hears_the_gap_live(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    """A connected viewer that stops reading while its next entries are trimmed: a gap
    event comes before the entries that follow, and every id is delivered or in it."""
    ids = [plain_redis.xadd("slow", {"d": b"x" * (512 << 10)}).decode() for _ in range(80)]
    got: list[str] = []
    gaps: list[dict[str, str]] = []
    url = f"{server.http_url}/sse/slow?last_entry_id=0"
    with httpx.stream("GET", url, timeout=30) as resp:
        events = Events(resp)
        got.append(events.next()["id"])  # connected, and reading; then it stalls
        plain_redis.xtrim("slow", minid=ids[75], approximate=False)  # 40 MB: not all sent
        while got[-1] != ids[-1]:
            event = events.next()
            if event.get("event") == "gap":
                gaps.append(json.loads(event["data"]))
                assert "id" not in event
            else:
                got.append(event["id"])
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap["sid"] == "slow" and gap["next"] == ids[75]
    assert got[got.index(gap["next"]) - 1] == gap["from"]  # told just before what follows
    lost = [i for i in ids if i not in got]
    assert lost and all(parse_id(gap["from"]) < parse_id(i) <= parse_id(gap["to"]) for i in lost)
    assert got == sorted(got, key=parse_id) and len(set(got)) == len(got)


def test_latest_starts_at_the_newest(http: httpx.Client, plain_redis: redis.Redis) -> None:
    for i in range(5):
        plain_redis.xadd("l", {"d": str(i)})
    with http.stream("GET", "/sse/l?last_entry_id=0&latest=1") as resp:
        events = Events(resp)
        assert events.next()["data"] == "4"
        later(lambda: plain_redis.xadd("l", {"d": b"5"}))
        assert events.next()["data"] == "5"


def test_a_comment_keeps_an_idle_stream_open(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch, plain_redis: redis.Redis
) -> None:
    monkeypatch.setattr(sse, "PING_S", 0.2)
    with http.stream("GET", "/sse/idle") as resp:
        events = Events(resp)
        later(lambda: plain_redis.xadd("idle", {"d": b"x"}), delay=1.0)
        assert events.next()["data"] == "x"
    assert events.comments and events.comments[0].startswith("ping")


def test_many_viewers_share_one_read(
    server: LiveServer, redis_url: str, plain_redis: redis.Redis
) -> None:
    viewers, frames = 6, 20
    plain_redis.xadd("shared", {"d": b"first"})
    received = [0] * viewers
    opened = threading.Barrier(viewers + 1)

    def view(i: int) -> None:
        with httpx.stream("GET", f"{server.http_url}/sse/shared", timeout=20) as resp:
            opened.wait()
            events = Events(resp)
            for _ in range(frames):
                events.next()
                received[i] += 1

    threads = [threading.Thread(target=view, args=(i,)) for i in range(viewers)]
    for t in threads:
        t.start()
    opened.wait()
    time.sleep(0.2)  # the streams' $ is fixed once the headers are out; not an assertion
    plain_redis.config_resetstat()
    for n in range(frames):
        plain_redis.xadd("shared", {"d": str(n)})
        wait_until(lambda n=n: min(received) > n, 10, what="every viewer to get the entry")
    for t in threads:
        t.join(10)
    xreads = plain_redis.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
    assert xreads <= frames + 4  # one read per entry, not one per viewer (120)


def test_sse_and_pulls_with_and_without_resume_share_one_read(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    """SSE viewers (told of gaps), pulls with resume=1 and plain pulls of one stream:
    one XREAD per entry for all of them, and no gap frame for the plain pulls."""
    frames = 20
    plain_redis.xadd("mix", {"d": b"first"})
    last: dict[str, str] = {}
    opened = threading.Barrier(7)

    def sse_viewer(name: str) -> None:
        with httpx.stream("GET", f"{server.http_url}/sse/mix", timeout=20) as resp:
            opened.wait()
            events = Events(resp)
            while last.get(name) != str(frames - 1):
                last[name] = events.next()["data"]

    def pull(name: str, query: str) -> None:
        with connect(f"{server.ws_url}/data/mix/pull?header=0{query}", open_timeout=20) as ws:
            if query:
                assert json.loads(ws.recv(20))["resume"]["recovered"] is True
            opened.wait()
            while last.get(name) != str(frames - 1):
                message = ws.recv(20)
                assert isinstance(message, bytes), f"{name} got a text frame: {message!r}"
                last[name] = message.decode()

    viewers = [
        *(threading.Thread(target=sse_viewer, args=(f"sse{i}",)) for i in range(2)),
        *(threading.Thread(target=pull, args=(f"plain{i}", "")) for i in range(2)),
        *(threading.Thread(target=pull, args=(f"resume{i}", "&resume=1")) for i in range(2)),
    ]
    for t in viewers:
        t.start()
    opened.wait()
    plain_redis.config_resetstat()
    for n in range(frames):
        plain_redis.xadd("mix", {"d": str(n)})
        wait_until(lambda n=n: len(last) == 6 and all(v == str(n) for v in last.values()), 10,
                   what="every viewer to get the entry")  # fmt: skip
    for t in viewers:
        t.join(10)
    xreads = plain_redis.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
    assert xreads <= frames + 4  # one read per entry, not one per kind of viewer


def test_bad_requests_get_a_reason(http: httpx.Client, plain_redis: redis.Redis) -> None:
    resp = http.get("/sse/cam?nope=1")
    assert resp.status_code == 400 and "nope" in resp.json()["error"]
    resp = http.get("/sse/cam?data=hex")
    assert resp.status_code == 400 and "base64" in resp.json()["error"]
    resp = http.get("/sse/cam", headers={"Last-Event-ID": "yesterday"})
    assert resp.status_code == 400 and "entry id" in resp.json()["error"]
    plain_redis.set("plain", "x")
    resp = http.get("/sse/cam+plain")
    assert resp.status_code == 409 and "'plain' holds a string" in resp.json()["error"]


@pytest.fixture
def guarded(redis_server: EmbeddedRedis, redis_url: str) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_url, jwt_secret="s" * 32, cors_origins=["http://ok.test"])
    with LiveServer(create_app(settings)) as live:
        yield live


def test_access_and_origin_rules_are_those_of_every_face(
    guarded: LiveServer, plain_redis: redis.Redis
) -> None:
    token = jwt.encode({"streams": {"read": ["cam:*"]}}, "s" * 32, algorithm="HS256")
    plain_redis.xadd("cam:1", {"d": b"x"}, id="1-0")
    with httpx.Client(base_url=guarded.http_url, timeout=20) as c:
        assert c.get("/sse/cam:1").status_code == 401
        denied = c.get(f"/sse/secret?token={token}")
        assert denied.status_code == 403 and "secret" in denied.json()["error"]
        denied = c.get(f"/sse/cam:1+secret?token={token}")
        assert denied.status_code == 403
        with c.stream("GET", f"/sse/cam:1?last_entry_id=0&token={token}") as resp:
            assert Events(resp).next()["data"] == "x"
        foreign = {"Origin": "http://evil.test"}
        with c.stream("GET", f"/sse/cam:1?last_entry_id=0&token={token}", headers=foreign) as r:
            assert "access-control-allow-origin" not in r.headers  # a browser may not read it
        listed = {"Origin": "http://ok.test"}
        with c.stream("GET", f"/sse/cam:1?last_entry_id=0&token={token}", headers=listed) as r:
            assert r.headers["access-control-allow-origin"] == "http://ok.test"
