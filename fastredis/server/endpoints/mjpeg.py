"""``GET /mjpeg/{sid}``: a stream's JPEG entries as MJPEG (``multipart/x-mixed-replace``),
so ``<img src="/mjpeg/cam">`` shows it live in any browser.

It behaves like a pull with ``latest=1``: each frame sent is the newest entry at that
moment, and the next is read only once the socket has taken it, so a slow viewer skips
frames and the server holds nothing for it. ``max_fps`` caps the frame rate. Until a
JPEG entry arrives, a placeholder image is shown. Entries that are not JPEG are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fastredis._frames import pull_views
from fastredis.server.edge.protocol import BadInput
from fastredis.server.endpoints.answering import answer, refuse_other_types
from fastredis.server.reads.hub import Subscription

__all__ = ["BOUNDARY", "IDLE_BLOCK_MS", "mjpeg_endpoint", "newest_frames"]

BOUNDARY = "fastredis-frame"
IDLE_BLOCK_MS = 5000  # one blocking read's wait; the loop simply reads again
MAX_FPS_LIMIT = 1000.0
JPEG_MAGIC = b"\xff\xd8\xff"

Frame = tuple[str, Any]  # (entry id, payload buffer)


@cache
def placeholder() -> bytes:
    """The JPEG shown while no frame has come."""
    pages = resources.files("fastredis.server.endpoints").joinpath("pages")
    return pages.joinpath("placeholder.jpg").read_bytes()


async def newest_frames(request: Request, sid: str) -> AsyncGenerator[Frame | None, None]:
    """The newest entry of `sid` each time the caller asks: first the newest there is
    (None when the stream is empty), then each newer one as it comes (None after
    `IDLE_BLOCK_MS` with nothing new), through the server's shared read (the hub)."""
    async with _subscribe(request, sid) as sub:
        async for frame in _frames(sub):
            yield frame


def _subscribe(request: Request, sid: str) -> Subscription:
    sub: Subscription = request.app.state.hub.subscribe(
        [sid], ["*"], count=1, latest=True, via="mjpeg"
    )
    return sub


async def _frames(sub: Subscription) -> AsyncGenerator[Frame | None, None]:
    """`newest_frames` of an entered subscription."""
    timeout: float = 0  # the first read does not wait: a placeholder instead
    while True:
        delivery = await sub.next(timeout=timeout)
        timeout = IDLE_BLOCK_MS / 1000
        if delivery is None or not len(delivery.batch):
            yield None
            continue
        batch = delivery.batch
        delivery.sent("mjpeg")
        eid = batch.ids()[-1]
        yield eid.decode() if isinstance(eid, bytes) else eid, pull_views(batch)[-1]


# Chromium shows a part only once the next part's headers have come in full, so each
# image is followed at once by the boundary and headers of the next part. Hence no
# Content-Length or entry id per part: those of the next image are not known yet.
PART_START = f"\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode()


class MJPEGStream:
    """The streaming answer, as an ASGI app: a watcher ends it when the client goes
    (wherever it waits, a blocking read included)."""

    def __init__(self, request: Request, sid: str, max_fps: float) -> None:
        self.request, self.sid, self.max_fps = request, sid, max_fps
        self.started = False  # the response headers are sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        main = asyncio.current_task()
        assert main is not None
        drained = False  # SIGTERM: the multipart body ends (`fastredis.server.edge.drain`)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            main.cancel()

        def drain(_reason: str) -> None:
            nonlocal drained
            if not drained:
                drained = True
                main.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        unregister = self.request.app.state.drain.register(drain)
        try:
            # where it starts is fixed before the headers say the stream is open
            async with _subscribe(self.request, self.sid) as sub:
                await self._stream(send, sub)
        except asyncio.CancelledError:
            if not watcher.done() and not drained:
                raise  # cancelled from outside, not by the client leaving or the drain
            uncancel = getattr(main, "uncancel", None)  # Python >= 3.11's bookkeeping
            if uncancel is not None:
                uncancel()
            if not watcher.done():
                await self._end(send)
        except RedisError:
            # the headers are sent: ending the body is all that is left to say
            with contextlib.suppress(OSError, RuntimeError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away while a frame was being sent
        finally:
            unregister()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _end(self, send: Send) -> None:
        """End the answer cleanly (the server drains): the multipart's closing
        boundary, or, before the headers went, 503 (the client tries again)."""
        with contextlib.suppress(OSError, RuntimeError):
            if not self.started:
                await send({"type": "http.response.start", "status": 503, "headers": []})
                await send({"type": "http.response.body", "body": b"server restarting"})
                return
            closing = f"\r\n--{BOUNDARY}--\r\n".encode()
            await send({"type": "http.response.body", "body": closing, "more_body": False})

    async def _stream(self, send: Send, sub: Subscription) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", f"multipart/x-mixed-replace; boundary={BOUNDARY}".encode()),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),  # proxies: pass frames on as they come
                ],
            }
        )
        self.started = True
        await send({"type": "http.response.body", "body": PART_START[2:], "more_body": True})
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.max_fps if self.max_fps else 0.0
        next_at = -math.inf
        shown = False
        frames = _frames(sub)
        try:
            while True:
                if interval and loop.time() < next_at:
                    await asyncio.sleep(next_at - loop.time())  # then read: the newest
                frame = await anext(frames)
                if frame is None or bytes(frame[1][:3]) != JPEG_MAGIC:
                    if shown:
                        continue
                    image: Any = placeholder()
                else:
                    image = frame[1]
                    next_at = loop.time() + interval
                shown = True
                del frame
                for body in (image, PART_START):
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                del image
        finally:
            await frames.aclose()


def _max_fps(request: Request) -> float:
    raw = request.query_params.get("max_fps")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"max_fps must be a number, not {raw!r}") from None
    if not 0 < value <= MAX_FPS_LIMIT:
        raise BadInput(f"max_fps must be above 0 and at most {MAX_FPS_LIMIT:g}, not {raw}")
    return value


async def mjpeg_endpoint(request: Request) -> Response | MJPEGStream:
    """GET /mjpeg/{sid}?max_fps=..."""
    return await answer(request, "read", lambda sids: _mjpeg(request, sids))


async def _mjpeg(request: Request, sids: list[str]) -> MJPEGStream:
    if len(sids) != 1:
        raise BadInput(f"MJPEG shows one stream, not {len(sids)}: ask for each by itself")
    max_fps = _max_fps(request)
    # a key of another type is refused before the multipart answer starts
    await refuse_other_types(request.app.state.redis, sids)
    return MJPEGStream(request, sids[0], max_fps)
