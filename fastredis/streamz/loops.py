"""Event-loop helpers of the streamz sources and sinks (tornado IOLoop on asyncio)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastredis.streamz.connection import log


async def cancel_and_wait(futures: list[Any], patience: float = 5.0) -> None:
    """Cancel tasks and wait until they are done. A cancellation that lands while redis-py
    opens a connection can be swallowed (redis-py 8.1), so it is repeated until it sticks."""
    pending = [f for f in futures if not f.done()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while pending:
        for f in pending:
            f.cancel()
        _done, still = await asyncio.wait(pending, timeout=0.05)
        pending = list(still)
        if pending and loop.time() > deadline:
            log.error("%d task(s) ignore cancellation: %r", len(pending), pending)
            return
    for f in futures:
        if f.done() and not f.cancelled():
            f.exception()  # retrieved: no "exception was never retrieved" noise


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def on_loop_thread(tornado_loop: Any) -> bool:
    """True when called from the thread running `tornado_loop` (an IOLoop)."""
    loop = running_loop()
    return loop is not None and loop is getattr(tornado_loop, "asyncio_loop", None)
