"""SharedReads: one read per key while others want it, kept reads bounded in bytes and
time, and a cut-off read never leaving the others without one."""

from __future__ import annotations

import asyncio
import time

import pytest

from fastredis.server.reads.catch_up import SharedReads


class Reads:
    """What `make` is asked to read: counts the reads, answers `size` bytes."""

    def __init__(self, size: int = 10) -> None:
        self.size = size
        self.made = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def make(self) -> bytes:
        self.made += 1
        await self.gate.wait()
        return b"x" * self.size


async def test_readers_of_one_key_share_the_read_under_way() -> None:
    shared: SharedReads[bytes] = SharedReads()
    reads = Reads()
    reads.gate.clear()
    tasks = [
        asyncio.create_task(shared.read("k", reads.make, len, since=0.0, keep=False))
        for _ in range(10)
    ]
    await asyncio.sleep(0)
    reads.gate.set()
    assert await asyncio.gather(*tasks) == [b"x" * 10] * 10
    assert reads.made == 1 and shared.shared == 9


async def test_a_kept_read_is_taken_until_it_expires() -> None:
    shared: SharedReads[bytes] = SharedReads(keep_s=0.2)
    reads = Reads()
    await shared.read("k", reads.make, len, since=0.0, keep=True)
    await shared.read("k", reads.make, len, since=0.0, keep=True)
    assert reads.made == 1
    await asyncio.sleep(0.25)
    await shared.read("k", reads.make, len, since=0.0, keep=True)
    assert reads.made == 2


async def test_a_new_reader_never_takes_a_kept_or_running_read() -> None:
    shared: SharedReads[bytes] = SharedReads()
    reads = Reads()
    await shared.read("k", reads.make, len, since=0.0, keep=True)
    await shared.read("k", reads.make, len, since=None, keep=True)
    assert reads.made == 2
    reads.gate.clear()
    running = asyncio.create_task(shared.read("j", reads.make, len, since=0.0, keep=False))
    await asyncio.sleep(0)
    fresh = asyncio.create_task(shared.read("j", reads.make, len, since=None, keep=False))
    await asyncio.sleep(0)
    assert reads.made == 4  # the new reader made its own
    reads.gate.set()
    await asyncio.gather(running, fresh)


async def test_kept_reads_stay_within_their_bytes() -> None:
    shared: SharedReads[bytes] = SharedReads(keep_bytes=35)
    reads = Reads(size=10)
    for key in range(10):
        await shared.read(key, reads.make, len, since=0.0, keep=True)
        assert shared._kept_bytes <= 35
    assert list(shared._kept) == [7, 8, 9]  # the oldest went first
    big = Reads(size=36)
    await shared.read("big", big.make, len, since=0.0, keep=True)
    assert "big" not in shared._kept  # larger than all of it: never kept
    await shared.read("empty", Reads(size=0).make, len, since=0.0, keep=True)
    assert "empty" not in shared._kept  # nothing read is nothing to share


@pytest.mark.parametrize("how", ["cancelled", "failed"])
async def test_waiters_read_themselves_when_the_read_they_wait_for_is_cut_off(
    how: str,
) -> None:
    shared: SharedReads[bytes] = SharedReads()
    blocked = asyncio.Event()

    async def first() -> bytes:
        await blocked.wait()
        raise ConnectionError("gone")

    reads = Reads()
    owner = asyncio.create_task(shared.read("k", first, len, since=0.0, keep=False))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(shared.read("k", reads.make, len, since=0.0, keep=False))
    await asyncio.sleep(0)
    if how == "cancelled":
        owner.cancel()
    else:
        blocked.set()
    assert await waiter == b"x" * 10  # its own read
    assert reads.made == 1
    with pytest.raises((asyncio.CancelledError, ConnectionError)):
        await owner
    assert not shared._running


async def test_a_read_issued_before_the_reader_began_is_not_its_to_take() -> None:
    shared: SharedReads[bytes] = SharedReads()
    reads = Reads()
    await shared.read("k", reads.make, len, since=0.0, keep=True)
    began = time.monotonic()
    await shared.read("k", reads.make, len, since=began, keep=True)
    assert reads.made == 2  # the kept one was issued before it began: its own
    await shared.read("k", reads.make, len, since=began, keep=True)
    assert reads.made == 2  # that one was issued after: taken
    reads.gate.clear()
    running = asyncio.create_task(shared.read("j", reads.make, len, since=0.0, keep=False))
    await asyncio.sleep(0)
    later = asyncio.create_task(
        shared.read("j", reads.make, len, since=time.monotonic(), keep=False)
    )
    await asyncio.sleep(0)
    assert reads.made == 4  # the read under way began before it: its own
    reads.gate.set()
    await asyncio.gather(running, later)
