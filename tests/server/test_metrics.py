"""/metrics: what a Prometheus scrape shows after real pushes, pulls, sockets, Redis
failures and consumer groups (the counters are the process's: tests compare deltas)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(redis_url=redis_url))) as c:
        yield c


def scrape(c: TestClient) -> Samples:
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_pushes_pulls_and_latency_are_counted(client: TestClient) -> None:
    before = scrape(client)
    with client.websocket_connect("/data/m/push?ack=1") as ws:
        for payload in (b"a" * 10, b"b" * 20, b"c" * 30):
            ws.send_text(json.dumps([len(payload)]))
            ws.send_bytes(payload)
            assert len(json.loads(ws.receive_text())) == 1
    assert client.post("/data/m", content=b"d" * 40).status_code == 200
    with client.websocket_connect("/data/m/pull?last_entry_id=0&count=10") as ws:
        json.loads(ws.receive_text())
        assert len(ws.receive_bytes()) == 100
    assert len(client.get("/data/m?count=2").content) == 70
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("fastredis_entries_pushed_total", via="ws") == 3
    assert delta("fastredis_pushed_bytes_total", via="ws") == 60
    assert delta("fastredis_entries_pushed_total", via="rest") == 1
    assert delta("fastredis_pushed_bytes_total", via="rest") == 40
    assert delta("fastredis_push_latency_seconds_count") == 4  # 3 messages and a POST
    assert delta("fastredis_push_latency_seconds_sum") > 0
    assert delta("fastredis_entries_pulled_total", via="ws") == 4
    assert delta("fastredis_pulled_bytes_total", via="ws") == 100
    assert delta("fastredis_entries_pulled_total", via="rest") == 2
    assert delta("fastredis_pulled_bytes_total", via="rest") == 70


def test_the_hubs_stream_reads_are_counted(client: TestClient, redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url)
    plain.xadd("reads", {"d": b"old"})
    before = scrape(client)
    with client.websocket_connect("/data/reads/pull?last_entry_id=0&block=0") as ws:
        json.loads(ws.receive_text())
        assert ws.receive_bytes() == b"old"  # read by its cursor: a catch-up read
        tail = "fastredis_stream_reads_total"
        wait_until(  # at the end of the stream it joins the shared tail read
            lambda: value(scrape(client), tail, kind="tail") > value(before, tail, kind="tail"),
            what="the shared tail read to start",
        )
        plain.xadd("reads", {"d": b"new"})
        json.loads(ws.receive_text())
        assert ws.receive_bytes() == b"new"
    after = scrape(client)

    def delta(kind: str) -> float:
        name = "fastredis_stream_reads_total"
        return value(after, name, kind=kind) - value(before, name, kind=kind)

    assert delta("catch_up") >= 1
    assert delta("tail") >= 1
    assert delta("shared") == 0  # nobody else read the stream


def test_open_sockets_by_kind(client: TestClient) -> None:
    base = value(scrape(client), "fastredis_open_sockets", kind="pull")
    with (
        client.websocket_connect("/data/a/pull") as _one,
        client.websocket_connect("/data/b/pull") as _two,
    ):
        assert value(scrape(client), "fastredis_open_sockets", kind="pull") == base + 2
    # the endpoint notices the close on its own: poll the gauge until it does
    wait_until(
        lambda: value(scrape(client), "fastredis_open_sockets", kind="pull") == base,
        what="the pull sockets to be counted as closed",
    )


def test_redis_errors_are_counted(private_redis: EmbeddedRedis) -> None:
    with TestClient(create_app(Settings(redis_url=private_redis.url))) as c:
        before = value(scrape(c), "fastredis_redis_errors_total", kind="unavailable")
        private_redis.kill()
        assert c.get("/data/s").status_code == 503
        with c.websocket_connect("/data/s/pull") as ws, pytest.raises(WebSocketDisconnect):
            ws.receive_text()
        private_redis.start()
        after = value(scrape(c), "fastredis_redis_errors_total", kind="unavailable")
        assert after - before == 2


def test_consumer_groups_pending_and_lag(client: TestClient, plain_redis: redis.Redis) -> None:
    for i in range(5):
        plain_redis.xadd("jobs", {"d": str(i)})
    plain_redis.xgroup_create("jobs", "workers", id="0")
    plain_redis.xgroup_create("jobs", "idle", id="$")
    plain_redis.xreadgroup("workers", "w1", {"jobs": ">"}, count=2)
    plain_redis.xadd("empty-groupless", {"d": "x"})
    samples = scrape(client)
    assert value(samples, "fastredis_group_pending", stream="jobs", group="workers") == 2
    assert value(samples, "fastredis_group_lag", stream="jobs", group="workers") == 3
    assert value(samples, "fastredis_group_consumers", stream="jobs", group="workers") == 1
    assert value(samples, "fastredis_group_pending", stream="jobs", group="idle") == 0
    assert value(samples, "fastredis_group_lag", stream="jobs", group="idle") == 0
    assert not [k for k in samples if ("stream", "empty-groupless") in k[1]]


def test_frames_a_latest_viewer_had_no_time_for_are_counted_as_dropped(
    client: TestClient, redis_url: str
) -> None:
    before = value(scrape(client), "fastredis_frames_dropped_total", via="pull", reason="latest")
    plain = redis.Redis.from_url(redis_url)
    hub = client.app.state.hub  # type: ignore[attr-defined]
    with client.websocket_connect("/data/drop/pull?latest=1&ack=1&block=0") as ws:
        # on the shared read before the first entry (one read by itself would skip
        # frames uncounted: only the shared read counts what it replaces)
        wait_until(lambda: any(g.subs for g in hub.groups.values()), what="the pull to join")
        plain.xadd("drop", {"d": b"first"})
        json.loads(ws.receive_text())
        assert ws.receive_bytes() == b"first"
        # not acked yet: each new entry replaces the frame waiting for this viewer

        def dropped() -> float:
            plain.xadd("drop", {"d": b"newer"})
            now = scrape(client)
            return value(now, "fastredis_frames_dropped_total", via="pull", reason="latest")

        wait_until(lambda: dropped() > before, what="a frame counted as dropped")
        plain.xadd("drop", {"d": b"newest"})
        last = plain.xrevrange("drop", count=1)[0][0].decode()
        ws.send_text("ack")
        while True:  # the frame waiting now is the newest, or one replaced by it soon
            header = json.loads(ws.receive_text())
            data = ws.receive_bytes()
            if header[0][1] == last:
                break
            ws.send_text("ack")
        assert data == b"newest"
