"""GraphQL at /graphql against the real app under uvicorn and a real Redis: every
stream field of the Redis Streamer protocol, the mutation as its README writes it,
GraphiQL, and the data subscription over graphql-transport-ws and graphql-ws (spoken by
hand)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from support.live_server import LiveServer, make_server_app
from support.waiting import wait_until
from websockets.sync.client import ClientConnection, connect

from fastredis.embedded import EmbeddedRedis

ALL_FIELDS = """
    sid
    entriesAdded
    firstEntryId
    firstEntryData
    firstEntryTime
    lastEntryId
    lastEntryData
    lastEntryTime
    lastGeneratedId
    maxDeletedEntryId
    groups
    length
    radixTreeKeys
    radixTreeNodes
    recordedFirstEntryId
    error
    meta
"""

# the Redis Streamer README's query, as written (comments included)
STREAMER_QUERY = """query GetStreams {
  sids  # get just the names without querying everything else
  streams {
    # redis XINFO STREAM information
    sid
    entriesAdded
    firstEntryId
    firstEntryData
    firstEntryTime
    lastEntryId
    lastEntryData
    lastEntryTime
    lastGeneratedId
    maxDeletedEntryId
    groups
    length
    radixTreeKeys
    radixTreeNodes
    recordedFirstEntryId
    # error message for XINFO STREAMS
    error

    # user-defined stream metadata
    meta
  }
}"""


@pytest.fixture(scope="module")
def live(redis_server: EmbeddedRedis) -> Iterator[tuple[LiveServer, Any]]:
    app = make_server_app(redis_server.url)
    with LiveServer(app) as live:
        yield live, app


@pytest.fixture
def server(live: tuple[LiveServer, Any]) -> LiveServer:
    """The module's server, once the subscriptions of earlier tests have left its hub
    (a closed subscription leaves a moment after its socket: the tests reuse stream
    names and ids, and a Redis flushed under a live shared read is not what they test)."""
    server, app = live
    wait_until(lambda: not app.state.hub.groups, what="earlier subscriptions gone")
    return server


@pytest.fixture
def gql(server: LiveServer, redis_url: str) -> Iterator[Any]:
    """POST a query to /graphql (Redis flushed first by redis_url); returns `data`."""
    with httpx.Client(base_url=server.http_url, timeout=10) as http:

        def run(query: str, variables: dict[str, Any] | None = None, errors: bool = False) -> Any:
            r = http.post("/graphql", json={"query": query, "variables": variables or {}})
            assert r.status_code == 200, r.text
            body = r.json()
            if errors:
                return body
            assert "errors" not in body, body
            return body["data"]

        yield run


def _info(plain: redis.Redis, sid: str) -> dict[str, Any]:
    """XINFO STREAM straight from Redis, keys as in the reply."""
    raw = plain.execute_command("XINFO", "STREAM", sid)
    if not isinstance(raw, dict):
        it = iter(raw)
        raw = dict(zip(it, it, strict=True))
    return {k.decode(): v for k, v in raw.items()}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_streamer_query_every_field(gql: Any, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("glf", {"d": b"first \x00\xff"}, id="1638125133432-0")
    plain_redis.xadd("glf", {"d": b"second"}, id="1638125133432-1")
    plain_redis.xadd("glf", {"d": b"third"}, id="1638125134000-0")
    plain_redis.xdel("glf", "1638125133432-1")
    plain_redis.xgroup_create("glf", "readers", id="0")
    plain_redis.xadd("other", {"d": b"x"})
    plain_redis.set("not-a-stream", "v")  # strings are not listed
    plain_redis.set("XMETA:glf", json.dumps({"format": "mp4"}))

    data = gql(STREAMER_QUERY)
    assert data["sids"] == ["glf", "other"]
    assert [s["sid"] for s in data["streams"]] == ["glf", "other"]
    glf = data["streams"][0]
    info = _info(plain_redis, "glf")
    assert glf == {
        "sid": "glf",
        "entriesAdded": 3,
        "firstEntryId": "1638125133432-0",
        "firstEntryData": _b64(b"first \x00\xff"),
        "firstEntryTime": "2021-11-28T18:45:33.432000+00:00",
        "lastEntryId": "1638125134000-0",
        "lastEntryData": _b64(b"third"),
        "lastEntryTime": "2021-11-28T18:45:34+00:00",
        "lastGeneratedId": "1638125134000-0",
        "maxDeletedEntryId": "1638125133432-1",
        "groups": 1,
        "length": 2,
        "radixTreeKeys": info["radix-tree-keys"],
        "radixTreeNodes": info["radix-tree-nodes"],
        "recordedFirstEntryId": "1638125133432-0",
        "error": None,
        "meta": {"format": "mp4"},
    }
    assert data["streams"][1]["meta"] is None
    assert data["streams"][1]["length"] == 1


def test_error_for_missing_and_non_stream_keys(gql: Any, plain_redis: redis.Redis) -> None:
    plain_redis.set("plain", "value")
    plain_redis.xadd("s", {"d": b"1"})
    data = gql('{ streams(sids: ["s", "plain", "missing"]) {' + ALL_FIELDS + "} }")
    ok, plain, missing = data["streams"]
    assert ok["sid"] == "s" and ok["error"] is None and ok["length"] == 1
    assert plain["sid"] == "plain"
    assert plain["error"] == "stream 'plain' holds a string, not a stream"
    assert missing["sid"] == "missing"
    assert missing["error"] == "stream 'missing' does not exist"
    for bad in (plain, missing):
        assert all(v is None for k, v in bad.items() if k not in ("sid", "error")), bad


def test_empty_stream_has_no_entries(gql: Any, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("e", {"d": b"1"}, id="5-0")
    plain_redis.xdel("e", "5-0")
    (e,) = gql('{ streams(sids: ["e"]) {' + ALL_FIELDS + "} }")["streams"]
    assert e["length"] == 0 and e["entriesAdded"] == 1 and e["lastGeneratedId"] == "5-0"
    for key in ("firstEntryId", "firstEntryData", "firstEntryTime", "lastEntryId"):
        assert e[key] is None


def test_entry_without_d_field(gql: Any, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("t", {"value": b"only"})
    plain_redis.xadd("t", {"a": b"1", "b": b"2"})
    (t,) = gql('{ streams(sids: ["t"]) { firstEntryData lastEntryData } }')["streams"]
    assert t == {"firstEntryData": _b64(b"only"), "lastEntryData": None}


def test_counters_beyond_32_bits(gql: Any, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("big", {"d": b"1"})
    plain_redis.execute_command("XSETID", "big", "9999999999999-0", "ENTRIESADDED", 2**40)
    (big,) = gql('{ streams(sids: ["big"]) { entriesAdded lastGeneratedId } }')["streams"]
    assert big == {"entriesAdded": 2**40, "lastGeneratedId": "9999999999999-0"}


def test_meta_mutation_as_the_streamer_writes_it(gql: Any, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("glf", {"d": b"1"})
    out = gql('mutation {\n  streamMeta(\n    sid: "glf",\n    meta: {format: "mp4"},\n  )\n}')
    assert out == {"streamMeta": {"format": "mp4"}}
    assert json.loads(plain_redis.get("XMETA:glf")) == {"format": "mp4"}
    assert gql('{\n  streams(sids: ["glf"]) {\n    sid\n    meta\n  }\n}') == {
        "streams": [{"sid": "glf", "meta": {"format": "mp4"}}]
    }
    # variables, nested JSON, replacing, and null deleting
    meta = {"fps": 30, "shape": [700, 700, 3], "nested": {"ok": True, "none": None}}
    out = gql('mutation M($m: JSON) { streamMeta(sid: "glf", meta: $m) }', {"m": meta})
    assert out["streamMeta"] == meta
    assert gql('{ streams(sids: ["glf"]) { meta } }')["streams"][0]["meta"] == meta
    assert gql('mutation { streamMeta(sid: "glf", meta: null) }') == {"streamMeta": None}
    assert plain_redis.get("XMETA:glf") is None
    # metadata of a stream that does not exist yet is kept, next to the error
    gql('mutation { streamMeta(sid: "later", meta: {unit: "m"}) }')
    (later,) = gql('{ streams(sids: ["later"]) { meta error } }')["streams"]
    assert later["meta"] == {"unit": "m"} and later["error"] == "stream 'later' does not exist"
    assert gql("{ sids }") == {"sids": ["glf"]}  # XMETA keys are not streams


def test_non_json_meta_is_returned_as_text(gql: Any, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("s", {"d": b"1"})
    plain_redis.set("XMETA:s", b"not json")
    assert gql('{ streams(sids: ["s"]) { meta } }')["streams"] == [{"meta": "not json"}]


def test_playground_served_to_a_browser(server: LiveServer) -> None:
    r = httpx.get(
        server.http_url + "/graphql",
        headers={"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "fastredis GraphQL" in r.text
    # everything inline: no asset from a CDN (tests/server/test_pages.py runs it offline)
    inline = r.text.replace('<link rel="icon" href="data:,">', "")  # no favicon fetched
    assert "src=" not in inline and "<link" not in inline and "unpkg" not in inline


def test_query_via_get(server: LiveServer, redis_url: str) -> None:
    r = httpx.get(server.http_url + "/graphql", params={"query": "{ sids }"})
    assert r.status_code == 200 and r.json() == {"data": {"sids": []}}


# -- subscription ---------------------------------------------------------------------

STREAMER_SUBSCRIPTION = """subscription DataSubscription {
  data(sids: ["glf"]) {
    sid
    time
    data  # base64 encoded data
    utf8  # read data as utf-8 text
  }
}"""


def _recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


class _Protocol:
    """The two subscription protocols, by hand."""

    def __init__(self, name: str, ws: ClientConnection):
        self.name, self.ws = name, ws

    def init(self) -> None:
        self.ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert _recv_json(self.ws)["type"] == "connection_ack"

    def subscribe(self, op_id: str, query: str) -> None:
        kind = "subscribe" if self.name == "graphql-transport-ws" else "start"
        self.ws.send(json.dumps({"id": op_id, "type": kind, "payload": {"query": query}}))

    def stop(self, op_id: str) -> None:
        kind = "complete" if self.name == "graphql-transport-ws" else "stop"
        self.ws.send(json.dumps({"id": op_id, "type": kind}))

    def next(self, timeout: float = 10) -> dict[str, Any]:
        """The next result message (keep-alives skipped)."""
        while True:
            msg = _recv_json(self.ws, timeout)
            if msg["type"] in ("ka", "ping", "pong"):
                if msg["type"] == "ping":
                    self.ws.send(json.dumps({"type": "pong"}))
                continue
            return msg

    def next_data(self, timeout: float = 10) -> dict[str, Any]:
        msg = self.next(timeout)
        expected = "next" if self.name == "graphql-transport-ws" else "data"
        assert msg["type"] == expected, msg
        assert "errors" not in msg["payload"], msg
        return msg["payload"]["data"]["data"]


PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_subscription_streamer_form(
    protocol: str, server: LiveServer, plain_redis: redis.Redis
) -> None:
    with connect(server.ws_url + "/graphql", subprotocols=[protocol], compression=None) as ws:
        assert ws.subprotocol == protocol
        p = _Protocol(protocol, ws)
        p.init()
        p.subscribe("1", STREAMER_SUBSCRIPTION)
        # "$": only entries added after the subscription started; tick until one arrives
        tick = 0

        def first() -> dict[str, Any] | None:
            nonlocal tick
            plain_redis.xadd("glf", {"d": f"tick {tick}".encode()})
            tick += 1
            try:
                return p.next_data(timeout=0.05)
            except TimeoutError:
                return None

        got = wait_until(first, timeout=10, interval=0, what="the first subscription message")
        first_tick = int(got["utf8"].split()[1])
        entry_ids = [got["time"]]
        for n in range(first_tick + 1, tick):  # every later tick, none lost, in order
            msg = p.next_data()
            assert msg["utf8"] == f"tick {n}"
            entry_ids.append(msg["time"])
        text_id = plain_redis.xadd("glf", {"d": "héllo".encode()}).decode()
        bin_id = plain_redis.xadd("glf", {"d": b"\xff\xfe\x00"}).decode()
        text, binary = p.next_data(), p.next_data()
        assert text == {
            "sid": "glf", "time": text_id, "data": _b64("héllo".encode()), "utf8": "héllo"
        }  # fmt: skip
        assert binary == {
            "sid": "glf", "time": bin_id, "data": _b64(b"\xff\xfe\x00"), "utf8": None
        }  # fmt: skip
        stored = [i.decode() for i, _ in plain_redis.xrange("glf")]
        assert stored[-len(entry_ids) - 2 :] == [*entry_ids, text_id, bin_id]
        p.stop("1")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_subscription_several_streams_from_the_start(
    protocol: str, server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("a", {"d": b"a0"}, id="1-0")
    plain_redis.xadd("b", {"d": b"b0"}, id="1-1")
    query = 'subscription { data(sids: ["a", "b"], lastEntryId: "0") { sid time utf8 datetime } }'
    with connect(server.ws_url + "/graphql", subprotocols=[protocol], compression=None) as ws:
        p = _Protocol(protocol, ws)
        p.init()
        p.subscribe("s1", query)
        got = [p.next_data(), p.next_data()]
        assert sorted((m["sid"], m["time"], m["utf8"]) for m in got) == [
            ("a", "1-0", "a0"),
            ("b", "1-1", "b0"),
        ]
        assert got[0]["datetime"] == "1970-01-01T00:00:00.001000+00:00"
        plain_redis.xadd("b", {"d": b"b1"}, id="2-0")
        assert p.next_data()["utf8"] == "b1"
        p.stop("s1")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_subscription_on_a_non_stream_key_errors(
    protocol: str, server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.set("plain", "v")
    with connect(server.ws_url + "/graphql", subprotocols=[protocol], compression=None) as ws:
        p = _Protocol(protocol, ws)
        p.init()
        p.subscribe("e", 'subscription { data(sids: ["plain"]) { sid } }')
        msg = p.next()
        if protocol == "graphql-transport-ws":
            assert msg["type"] in ("next", "error"), msg
            errors = msg["payload"] if msg["type"] == "error" else msg["payload"]["errors"]
        else:
            assert msg["type"] in ("data", "error"), msg
            payload = msg["payload"]
            errors = payload if msg["type"] == "error" else payload["errors"]
        assert [e["message"] for e in errors] == ["stream 'plain' holds a string, not a stream"]


def _xread_calls(plain: redis.Redis) -> int:
    return plain.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)


def test_subscription_survives_idle_periods(server: LiveServer, plain_redis: redis.Redis) -> None:
    """A subscription idle for several XREAD rounds (on a stream that does not exist
    yet: its catch-up read, the hub's tail read, then the parked read) still delivers."""
    query = 'subscription { data(sids: ["idle"], lastEntryId: "0") { utf8 } }'
    with connect(server.ws_url + "/graphql", subprotocols=PROTOCOLS[:1]) as ws:
        p = _Protocol(PROTOCOLS[0], ws)
        p.init()
        calls = _xread_calls(plain_redis)
        p.subscribe("1", query)
        # two empty reads come back (catch-up, shared tail), then the parked read blocks
        # (a blocked XREAD is only counted in commandstats once it returns)
        wait_until(
            lambda: _xread_calls(plain_redis) >= calls + 2 and _blocked_xreads(plain_redis),
            what="two empty XREADs and a parked one",
        )
        plain_redis.xadd("idle", {"d": b"late"})
        assert p.next_data() == {"utf8": "late"}


def _blocked_xreads(plain: redis.Redis) -> list[dict[str, Any]]:
    return [c for c in plain.client_list() if c.get("cmd") == "xread" and "b" in c.get("flags", "")]


@pytest.mark.parametrize("stop_first", [True, False], ids=["stop-then-close", "close"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_closing_a_subscription_frees_its_redis_read(
    protocol: str,
    stop_first: bool,
    server: LiveServer,
    plain_redis: redis.Redis,
) -> None:
    """No subscription keeps reading for a client that has gone, even when the
    cancellation lands on a redis-py send (Python < 3.12 wait_for can swallow it;
    the hub's shared read ends when its last subscriber has gone)."""
    from fastredis.server.reads import hub

    query = 'subscription { data(sids: ["x", "y"], lastEntryId: "0") { utf8 } }'
    for round_ in range(3):
        with connect(server.ws_url + "/graphql", subprotocols=[protocol]) as ws:
            p = _Protocol(protocol, ws)
            p.init()
            p.subscribe("1", query)
            plain_redis.xadd("x", {"d": str(round_).encode()})
            assert p.next_data() == {"utf8": str(round_)}
            if stop_first:
                p.stop("1")  # lands while the generator starts its next XREAD
        plain_redis.delete("x")
    shared = server.server.config.app.state.hub  # the server's hub
    wait_until(
        lambda: not shared.groups and not _blocked_xreads(plain_redis),
        timeout=hub.ACTIVE_BLOCK_MS / 1000 + 5,
        what="no shared read and no XREAD left blocked for a closed subscription",
    )
    # and none comes back: a loop still running would XREAD again every BLOCK
    calls = _xread_calls(plain_redis)
    time.sleep(4 * hub.ACTIVE_BLOCK_MS / 1000)
    assert _xread_calls(plain_redis) == calls


def test_consumer_groups_of_a_stream(gql: Any, plain_redis: redis.Redis) -> None:
    ids = [plain_redis.xadd("jobs", {"d": str(i)}).decode() for i in range(5)]
    plain_redis.xgroup_create("jobs", "workers", id="0")
    plain_redis.xreadgroup("workers", "w1", {"jobs": ">"}, count=2)
    plain_redis.xreadgroup("workers", "w2", {"jobs": ">"}, count=1)
    plain_redis.xack("jobs", "workers", ids[0])
    plain_redis.xgroup_create("jobs", "late", id="$")
    plain_redis.set("plain", "v")
    query = """{ streams(sids: ["jobs", "plain"]) { sid consumerGroups {
        name consumers pending lag lastDeliveredId entriesRead } } }"""
    jobs, plain = gql(query)["streams"]
    assert jobs["consumerGroups"] == [
        {
            "name": "late",
            "consumers": 0,
            "pending": 0,
            "lag": 0,
            "lastDeliveredId": ids[4],
            "entriesRead": None,  # created at $: Redis counts no reads, lag is still known
        },
        {
            "name": "workers",
            "consumers": 2,
            "pending": 2,
            "lag": 2,
            "lastDeliveredId": ids[2],
            "entriesRead": 3,
        },
    ]
    assert plain["consumerGroups"] is None  # not a stream: its error says why


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_announce_says_when_the_subscription_reads(
    protocol: str, server: LiveServer, plain_redis: redis.Redis
) -> None:
    """With /graphql?announce=1 the first event carries no entry and comes once the
    subscription reads: an entry added right after it is delivered (the playground
    says "subscribed" only then)."""
    before = plain_redis.xadd("ann", {"d": b"old"}).decode()
    url = server.ws_url + "/graphql?announce=1"
    with connect(url, subprotocols=[protocol], compression=None) as ws:
        p = _Protocol(protocol, ws)
        p.init()
        p.subscribe("1", 'subscription { data(sids: ["ann"]) { sid time utf8 } }')
        assert p.next_data() == {"sid": "ann", "time": before, "utf8": ""}
        entry = plain_redis.xadd("ann", {"d": b"right after"}).decode()
        assert p.next_data() == {"sid": "ann", "time": entry, "utf8": "right after"}
        p.stop("1")
