"""The one loop every source emits with: items one by one, or a whole batch at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from streamz import Stream
from streamz.core import RefCounter

from fastredis.streamz.acks import Acker, AckRef
from fastredis.streamz.connection import log
from fastredis.streamz.message import Message

YIELD_EVERY = 1024  # per-item emission lets the loop run (acks, heartbeats) this often


async def emit_each(
    source: Stream,
    items: list[Any],
    acker: Acker | None = None,
    failed: Callable[[Any, Exception], None] | None = None,
) -> int:
    """Emit items one by one, as ``source._emit`` would, and return how many got through.

    Cheaper than ``_emit`` per item: the downstream nodes are looked up once per
    YIELD_EVERY items (at each yield to the loop); a node connected from inside a
    downstream callback gets items from the next yield on. With an `acker`, the items are
    (stream, id, ...) entries of a consumer group: each carries an AckRef (count 1, held
    by us until what its emit returned is done); those finished then are handed to the
    acker together before the loop runs anything else. A finished entry's AckRef (and
    its metadata) then serves the next entry: nothing downstream holds it any more. When
    downstream raises, the failure is logged, ``failed(item, exc)`` is called and
    emission goes on with the next item. Once the source is stopped, no further item is
    emitted: ``stop()`` returns after the item under way (or at once, when a step
    downstream returned a future: that item counts as not emitted, so it is delivered
    again), and the caller keeps the rest (a group leaves them pending, a stream reader
    rewinds, a list reader puts them back).
    """
    n = len(items)
    i = emitted = 0
    ref, md = _new_ref(acker)
    source.current_metadata = None
    while i < n:
        downstreams = list(source.downstreams)
        single = downstreams[0].update if len(downstreams) == 1 else None
        end = min(n, i + YIELD_EVERY)
        finished: list[Any] = []
        for x in items[i:end]:
            if source.stopped:
                _hand_over(acker, finished)
                return emitted
            if ref is not None:
                ref.entry = x
            try:
                if single is not None:
                    # What Stream._emit does for one node, minus its retain/release pair
                    # around update() (a no-op while we hold our own reference).
                    source.current_value = x
                    source.current_metadata = md
                    r = single(x, who=source, metadata=md)
                    if r:
                        finished = _hand_over(acker, finished)
                        await _finished(source, r if type(r) is list else [r])
                else:
                    r = source._emit(x, md)
                    if r:
                        finished = _hand_over(acker, finished)
                        await _finished(source, r)
            except asyncio.CancelledError:
                if source.stopped:  # stop() while a step downstream was under way
                    _hand_over(acker, finished)
                    return emitted  # x is delivered again after the next start
                raise
            except Exception as exc:
                downstream_failed(source, x, exc)
                if failed is not None:
                    failed(x, exc)
                if ref is not None:  # never released by us: a new one for the next entry
                    ref, md = _new_ref(acker)
                continue
            if ref is not None:
                if ref.count == 1:  # only ours: finished, and the ref is free again
                    finished.append(x)
                else:  # held downstream: in flight until released there
                    ref.emitted()
                    ref, md = _new_ref(acker)
            emitted += 1
        _hand_over(acker, finished)
        i = end
        if i < n:
            await asyncio.sleep(0)
    return emitted


def _new_ref(acker: Acker | None) -> tuple[AckRef | None, list[Any]]:
    """An entry's reference (with an acker) and the metadata that carries it. Without an
    acker every item gets the same empty metadata (nothing downstream changes it)."""
    if acker is None:
        return None, []
    ref = AckRef(acker, None)
    return ref, [{"ref": ref}]


async def _finished(source: Stream, results: list[Any]) -> None:
    """Wait for what downstream returned; stop() ends the wait (through the source's
    `_wait`), not the downstream work itself. Futures done already (a tornado coroutine
    step that finished at once, as ``partition`` does) are not waited for: the item is
    emitted, and a stop() arriving meanwhile must not count it as undelivered (a list
    reader would put back an item its steps had taken)."""
    if all(isinstance(f, asyncio.Future) and f.done() for f in results):
        for f in results:
            f.result()  # a step's error is raised here, as gather would
        return
    fut = asyncio.gather(*results)
    wait = getattr(source, "_wait", None)
    if wait is None:
        await fut
    else:
        await wait(asyncio.shield(fut))


def _hand_over(acker: Acker | None, finished: list[Any]) -> list[Any]:
    """Give the acker the entries finished so far (before anything else may run)."""
    if finished and acker is not None:
        acker.finished(finished)
        return []
    return finished


async def emit_one(source: Stream, x: Any, ref: RefCounter | None = None) -> Exception | None:
    """Emit one item (a batch, a list of Messages) and wait for what the emit returned.

    Returns None when it got through (``ref`` is then released), the exception when
    downstream raised (logged; ``ref`` is left as it is).
    """
    try:
        r = source._emit(x, metadata=[{"ref": ref}] if ref is not None else None)
        if r:
            await asyncio.gather(*r)
    except Exception as exc:
        downstream_failed(source, x, exc)
        return exc
    if ref is not None:
        ref.release()
    return None


def downstream_failed(source: Stream, x: Any, exc: Exception) -> None:
    """A node downstream raised: log it (a source that died on one bad entry would stop
    the whole pipeline, so emission goes on)."""
    what = f"entry {x[1]!r} of {x[0]!r}" if type(x) is Message else f"a {type(x).__name__}"
    name = getattr(source, "_what", type(source).__name__)
    log.error("%s: downstream raised on %s: %r", name, what, exc)
