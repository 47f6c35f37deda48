"""GET /mjpeg/{sid} over a real socket: the multipart answer, the placeholder, newest
frames only for a viewer that does not keep up, max_fps, and bad requests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from support.images import frame, size_of
from support.live_server import LiveServer, make_server_app, server_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis
from fastredis.server.endpoints.mjpeg import BOUNDARY, placeholder


class Parts:
    """Reads the images of a multipart/x-mixed-replace body, each once the boundary
    after it has come."""

    def __init__(self, response: httpx.Response) -> None:
        self.chunks = response.iter_raw()
        self.buf = b""
        self.first = True

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self.buf += next(self.chunks)
        head, _, self.buf = self.buf.partition(marker)
        return head

    def next(self) -> bytes:
        if self.first:  # the body starts with the first boundary
            self._until(f"--{BOUNDARY}\r\n".encode())
            self.first = False
        headers = self._until(b"\r\n\r\n").decode()
        assert headers == "Content-Type: image/jpeg", headers
        return self._until(f"\r\n--{BOUNDARY}\r\n".encode())


@pytest.fixture
def http(server: LiveServer, redis_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=20) as c:
        yield c


def test_placeholder_then_each_new_frame(http: httpx.Client, plain_redis: redis.Redis) -> None:
    with http.stream("GET", "/mjpeg/cam") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        parts = Parts(resp)
        assert parts.next() == placeholder()
        for shade, size in ((1, (320, 180)), (2, (64, 48))):
            image = frame(*size, shade=shade)
            plain_redis.xadd("cam", {"d": image})
            body = parts.next()
            assert body == image and size_of(body) == size


def test_starts_with_the_newest_frame_and_skips_other_entries(
    http: httpx.Client, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("cam", {"d": frame(shade=1)})
    plain_redis.xadd("cam", {"d": frame(shade=2)})
    with http.stream("GET", "/mjpeg/cam") as resp:
        parts = Parts(resp)
        assert parts.next() == frame(shade=2)
        plain_redis.xadd("cam", {"d": b"not an image"})
        plain_redis.xadd("cam", {"d": frame(shade=3, fmt="PNG")})
        plain_redis.xadd("cam", {"d": frame(shade=4)})
        assert parts.next() == frame(shade=4)


def test_a_viewer_that_does_not_read_gets_only_the_newest(
    http: httpx.Client, plain_redis: redis.Redis
) -> None:
    image = frame(1280, 720, shade=5)
    image += b"\x00" * max(0, 200_000 - len(image))  # JPEG readers ignore trailing bytes
    with http.stream("GET", "/mjpeg/cam") as resp:
        parts = Parts(resp)
        parts.next()  # the placeholder
        for i in range(100):  # each frame ends with its number
            plain_redis.xadd("cam", {"d": image + i.to_bytes(4, "big")})
        seen: list[int] = []
        while not seen or seen[-1] != 99:
            seen.append(int.from_bytes(parts.next()[-4:], "big"))
    # 20 MB were pushed; the socket buffers hold a few frames, the server none
    assert len(seen) < 50, seen
    assert seen == sorted(seen)


def test_max_fps_spaces_the_frames(http: httpx.Client, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("cam", {"d": frame(shade=1)})
    with http.stream("GET", "/mjpeg/cam?max_fps=2") as resp:
        parts = Parts(resp)
        parts.next()
        first = time.monotonic()
        plain_redis.xadd("cam", {"d": frame(shade=2)})
        assert parts.next() == frame(shade=2)
        # not a timing benchmark: the pacing rule itself (2 fps: >= 0.5 s apart)
        assert time.monotonic() - first >= 0.45


def test_closing_the_viewer_ends_the_stream(
    http: httpx.Client, server: LiveServer, plain_redis: redis.Redis
) -> None:
    def open_mjpeg() -> float:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith('fastredis_open_sockets{kind="mjpeg"}'):
                return float(line.split()[-1])
        raise AssertionError("no mjpeg socket gauge")

    with http.stream("GET", "/mjpeg/idle") as resp:
        parts = Parts(resp)  # kept: a dropped body iterator closes the response
        parts.next()
        assert open_mjpeg() == 1
    # the server notices the close while it waits on an idle stream
    wait_until(lambda: open_mjpeg() == 0, what="the MJPEG answer to end")


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/mjpeg/a+b", 400, "one stream"),
        ("/mjpeg/cam?max_fps=0", 400, "max_fps must be above 0"),
        ("/mjpeg/cam?max_fps=fast", 400, "max_fps must be a number"),
        ("/mjpeg/text", 409, "holds a string"),
    ],
)
def test_bad_requests(
    http: httpx.Client, plain_redis: redis.Redis, path: str, status: int, reason: str
) -> None:
    plain_redis.set("text", "v")
    resp = http.get(path)
    assert resp.status_code == status
    assert reason in resp.json()["error"]


def test_redis_going_away_ends_the_stream(private_redis: EmbeddedRedis) -> None:
    with (
        LiveServer(make_server_app(private_redis.url)) as live,
        httpx.Client(base_url=live.http_url, timeout=20) as http,
        http.stream("GET", "/mjpeg/cam") as resp,
    ):
        parts = Parts(resp)
        assert parts.next() == placeholder()
        private_redis.kill()
        with pytest.raises(StopIteration):  # the body ends, cleanly
            parts.next()
