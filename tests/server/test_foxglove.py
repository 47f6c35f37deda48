"""WS /foxglove against a client written from the foxglove.websocket.v1 spec: serverInfo,
advertise / unadvertise as streams come and go, CompressedImage (decoded with
foxglove-schemas-protobuf) and raw channels, entry-id times, latest, unsubscribe, one
shared read for many viewers, access rules, and malformed client messages."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator

import httpx
import jwt
import pytest
import redis
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from google.protobuf.descriptor_pb2 import FileDescriptorSet  # type: ignore[import-untyped]
from support.foxglove_client import FoxgloveClient
from support.images import frame
from support.live_server import LiveServer, server_fixture  # noqa: F401
from support.waiting import wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app
from fastredis.server.endpoints import foxglove


@pytest.fixture(autouse=True)
def quick_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(foxglove, "SCAN_S", 0.2)  # streams come and go within a test
    monkeypatch.setattr(foxglove, "FRESH_S", 0.0)  # each test connects to its own streams


@pytest.fixture
def url(server: LiveServer, redis_url: str) -> str:
    return server.ws_url + "/foxglove"


def stamp(entry_id: str) -> int:
    ms, seq = (int(p) for p in entry_id.split("-"))
    return ms * 1_000_000 + seq


def test_streams_are_advertised_by_what_they_hold(url: str, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("cam", {"d": frame()})
    plain_redis.xadd("png", {"d": frame(fmt="PNG")})
    plain_redis.xadd("log", {"d": b'{"level": 1}'})
    plain_redis.xadd("imu", {"d": b"\x01\x02"})
    plain_redis.set(
        "XMETA:imu", json.dumps({"encoding": "cdr", "schemaName": "Imu", "schema": "s"})
    )
    plain_redis.set("plain", "not a stream")
    with FoxgloveClient(url) as client:
        assert client.server_info["name"] == "fastredis"
        assert client.ws.subprotocol == "foxglove.websocket.v1"
        advertise = client.next_json()
        assert advertise["op"] == "advertise"
        by_topic = {c["topic"]: c for c in advertise["channels"]}
    assert sorted(by_topic) == ["cam", "imu", "log", "png"]
    for topic in ("cam", "png"):
        assert by_topic[topic]["encoding"] == "protobuf"
        assert by_topic[topic]["schemaName"] == "foxglove.CompressedImage"
        files = FileDescriptorSet.FromString(base64.b64decode(by_topic[topic]["schema"])).file
        assert [f.name for f in files] == [
            "google/protobuf/timestamp.proto",
            "foxglove/CompressedImage.proto",
        ]
    assert (by_topic["log"]["encoding"], by_topic["log"]["schemaName"]) == ("json", "")
    imu = by_topic["imu"]
    assert (imu["encoding"], imu["schemaName"], imu["schema"]) == ("cdr", "Imu", "s")
    assert len({c["id"] for c in by_topic.values()}) == 4


def test_channels_come_and_go_with_their_streams(url: str, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("old", {"d": b"1"})
    plain_redis.xgroup_create("empty", "g", mkstream=True)  # no entry yet: nothing to say
    with FoxgloveClient(url) as client:
        old = client.channel("old")
        assert not any(c["topic"] == "empty" for c in client.channels.values())
        plain_redis.xadd("new", {"d": b"2"})
        plain_redis.xadd("empty", {"d": frame()})
        assert client.channel("new")["encoding"] == "json"
        assert client.channel("empty")["schemaName"] == "foxglove.CompressedImage"
        plain_redis.delete("old")
        wait_until(
            lambda: client.pump(5) or old["id"] in client.unadvertised, 10, what="unadvertise"
        )
        assert all(c["topic"] != "old" for c in client.channels.values())


def test_images_arrive_as_compressed_image_with_the_entry_time(
    url: str, plain_redis: redis.Redis
) -> None:
    image = frame(64, 48, shade=3)
    first = plain_redis.xadd("cam", {"d": image}).decode()
    with FoxgloveClient(url) as client:
        client.subscribe(7, client.channel("cam")["id"])
        sub_id, time_ns, payload = client.message()
        assert (sub_id, time_ns) == (7, stamp(first))  # newest first, at once
        msg = CompressedImage.FromString(payload)
        assert (msg.data, msg.format, msg.frame_id) == (image, "jpeg", "cam")
        assert msg.timestamp.seconds * 10**9 + msg.timestamp.nanos == stamp(first)
        plain_redis.xadd("cam", {"d": b"not an image"})  # skipped on an image channel
        png = frame(32, 24, fmt="PNG")
        second = plain_redis.xadd("cam", {"d": png}).decode()
        sub_id, time_ns, payload = client.message()
        msg = CompressedImage.FromString(payload)
        assert (time_ns, msg.data, msg.format) == (stamp(second), png, "png")


def test_raw_channels_carry_the_payload_unchanged(url: str, plain_redis: redis.Redis) -> None:
    plain_redis.set("XMETA:imu", json.dumps({"encoding": "cdr", "schemaName": "Imu", "schema": ""}))
    plain_redis.xadd("imu", {"d": b"\x00\x01binary"})
    with FoxgloveClient(url) as client:
        client.subscribe(1, client.channel("imu")["id"])
        assert client.message()[2] == b"\x00\x01binary"
        entry = plain_redis.xadd("imu", {"d": b"\xff" * 1000}).decode()
        assert client.message()[1:] == (stamp(entry), b"\xff" * 1000)


def test_latest_sends_the_newest_and_unsubscribe_stops(url: str, plain_redis: redis.Redis) -> None:
    for i in range(5):
        plain_redis.xadd("a", {"d": str(i)})
    plain_redis.xadd("b", {"d": b"b0"})
    with FoxgloveClient(url) as client:
        client.subscribe(1, client.channel("a")["id"])
        assert client.message()[2] == b"4"  # the newest, not the backlog
        client.unsubscribe(1)
        plain_redis.xadd("a", {"d": b"after"})
        client.subscribe(2, client.channel("b")["id"])
        assert client.message()[:1] == (2,)  # nothing more came for subscription 1
        plain_redis.xadd("b", {"d": b"b1"})
        assert client.message()[0::2] == (2, b"b1")


def test_subscribe_mistakes_get_a_status(url: str, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("a", {"d": b"1"})
    with FoxgloveClient(url) as client:
        cid = client.channel("a")["id"]
        client.subscribe(1, 999)
        client.subscribe(2, cid)
        client.subscribe(2, cid)
        client.send({"op": "getParameters", "parameterNames": []})
        client.unsubscribe(42)
        while len(client.statuses) < 4:  # subscription 2's first frame may come between
            client.pump(10)
        texts = [s["message"] for s in client.statuses]
        assert "no channel 999" in texts[0] and "id 2 is in use" in texts[1]
        assert "getParameters" in texts[2] and "no subscription 42" in texts[3]


def test_one_read_serves_pulls_sse_and_foxglove_viewers_at_once(
    server: LiveServer, redis_url: str, plain_redis: redis.Redis
) -> None:
    frames = 20
    plain_redis.xadd("shared", {"d": b"first"})
    last: dict[str, bytes] = {}

    def foxglove_viewer(name: str) -> None:
        with FoxgloveClient(server.ws_url + "/foxglove") as client:  # latest, as the app
            client.subscribe(1, client.channel("shared")["id"])
            while last.get(name) != str(frames - 1).encode():
                last[name] = client.message()[2]

    def pull_viewer(name: str) -> None:
        url = server.ws_url + "/data/shared/pull?header=0&last_entry_id=*"
        with connect(url, open_timeout=20) as ws:
            while last.get(name) != str(frames - 1).encode():
                last[name] = ws.recv(20)  # type: ignore[assignment]

    def sse_viewer(name: str) -> None:
        url = server.http_url + "/sse/shared?latest=1&last_entry_id=*"
        with httpx.stream("GET", url, timeout=20) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    last[name] = line[6:].encode()
                    if last[name] == str(frames - 1).encode():
                        return

    viewers = {f"{kind.__name__}{i}": kind for kind in (foxglove_viewer, pull_viewer, sse_viewer)
               for i in range(2)}  # fmt: skip
    threads = [threading.Thread(target=v, args=(n,), daemon=True) for n, v in viewers.items()]
    for t in threads:
        t.start()
    wait_until(lambda: all(last.get(n) == b"first" for n in viewers), 20, what="first frames")
    plain_redis.config_resetstat()
    for n in range(frames):
        plain_redis.xadd("shared", {"d": str(n)})
        wait_until(lambda n=n: all(last.get(v) == str(n).encode() for v in viewers), 10,
                   what="every viewer to show the entry")  # fmt: skip
    for t in threads:
        t.join(10)
    xreads = plain_redis.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
    assert xreads <= frames + 4  # one read per entry for all three kinds, not one per kind


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ("{not json", 1007, "not JSON"),
        ('["subscribe"]', 1007, "JSON object"),
        ('{"op": "dance"}', 1007, "unknown op 'dance'"),
        ('{"op": "subscribe", "subscriptions": [{"id": -1, "channelId": 1}]}', 1007, "-1"),
        ('{"op": "subscribe"}', 1007, "subscriptions"),
        ('{"op": "unsubscribe", "subscriptionIds": "all"}', 1007, "array"),
        (b"\x01\x00\x00\x00", 1003, "binary"),
        ('{"op": "unsubscribe", "subscriptionIds": [' + "1," * 40000 + "1]}", 1009, "over"),
    ],
)
def test_malformed_client_messages_close_with_a_reason(
    url: str, message: str | bytes, code: int, words: str
) -> None:
    with FoxgloveClient(url) as client:
        client.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                client.pump(10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code and words in closed.value.rcvd.reason


def test_a_client_without_the_subprotocol_is_told(url: str) -> None:
    with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(10)
    assert closed.value.rcvd is not None and "foxglove.websocket.v1" in closed.value.rcvd.reason


@pytest.fixture
def guarded(redis_server: EmbeddedRedis, redis_url: str) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_url, jwt_secret="s" * 32)
    with LiveServer(create_app(settings)) as live:
        yield live


def test_only_streams_the_token_may_read_are_advertised(
    guarded: LiveServer, plain_redis: redis.Redis
) -> None:
    token = jwt.encode({"streams": {"read": ["cam:*"]}}, "s" * 32, algorithm="HS256")
    for sid in ("cam:1", "cam:2", "secret"):
        plain_redis.xadd(sid, {"d": b"x"})
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        FoxgloveClient(guarded.ws_url + "/foxglove")
    assert refused.value.response.status_code == 401
    with FoxgloveClient(f"{guarded.ws_url}/foxglove?token={token}") as client:
        topics = sorted(c["topic"] for c in client.next_json()["channels"])
    assert topics == ["cam:1", "cam:2"]
