"""Big reply buffers of dropped batches are reused for the next big replies, and never
while anything else still references them."""

from __future__ import annotations

import socket
import threading

from fastredis._batch import spare_buffers
from fastredis._resp import READ, Reader

MB = 1 << 20


def _reply(value: bytes) -> bytes:
    head = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nd\r\n"
    return head + b"$%d\r\n" % len(value) + value + b"\r\n"


def _received(value: bytes):
    """The batch a Reader builds from the reply of `value`, received over a socket."""
    a, b = socket.socketpair()
    sender = threading.Thread(target=b.sendall, args=(_reply(value),))
    sender.start()
    reader = Reader()
    reader.expect_batch(READ, None)
    try:
        while (batch := reader.gets()) is False:
            assert reader.recv_from(a) > 0
    finally:
        sender.join()
        a.close()
        b.close()
    return batch


def test_a_dropped_big_batch_buffer_is_reused_with_its_new_content() -> None:
    first = _received(b"a" * (3 * MB))
    before = spare_buffers()
    del first
    kept = spare_buffers()
    assert kept[0] == before[0] + 1
    second = _received(b"b" * (3 * MB))
    assert spare_buffers()[0] == kept[0] - 1  # taken for the second reply
    assert second[0][2] == {b"d": b"b" * (3 * MB)}
    assert hash(second.buf) == hash(bytes(second.buf))  # no stale cached hash
    del second


def test_a_buffer_still_referenced_is_never_reused() -> None:
    first = _received(b"a" * (2 * MB))
    view = first.field(b"d")[0]  # a view into first's buffer
    count = spare_buffers()[0]
    del first
    assert spare_buffers()[0] == count
    second = _received(b"b" * (2 * MB))
    assert bytes(view[:3]) == b"aaa" and bytes(view[-3:]) == b"aaa"
    assert second[0][2] == {b"d": b"b" * (2 * MB)}


def test_small_batches_are_not_kept() -> None:
    count = spare_buffers()[0]
    batch = _received(b"x" * 1000)
    del batch
    assert spare_buffers()[0] == count
