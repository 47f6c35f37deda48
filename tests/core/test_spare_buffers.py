"""Big reply buffers of dropped batches are reused for the next big replies, and never
while anything else still references them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from fastredis._batch import release_spare_buffers, spare_buffers
from fastredis._resp import READ, Reader, batch_from_reply

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


@pytest.fixture(autouse=True)
def empty_pool() -> Iterator[None]:
    """Each test starts with no kept buffer (those of earlier tests may fill the pool)."""
    release_spare_buffers()
    yield
    release_spare_buffers()


def test_release_gives_every_kept_buffer_back() -> None:
    batches = [_received(bytes([65 + i]) * (2 * MB)) for i in range(3)]
    del batches
    assert spare_buffers()[0] == 3
    assert release_spare_buffers() >= 3 * 2 * MB
    assert spare_buffers() == (0, 0)
    again = _received(b"z" * (2 * MB))  # received into a new buffer
    assert again[0][2] == {b"d": b"z" * (2 * MB)}


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


def test_a_full_pool_keeps_a_bigger_buffer_in_place_of_a_smaller_one() -> None:
    small = [batch_from_reply(_reply(bytes([65 + i]) * MB), READ) for i in range(8)]
    del small  # eight 1 MB buffers: the pool (8 at most) is full
    count, kept = spare_buffers()
    assert count == 8
    big = batch_from_reply(_reply(b"z" * (6 * MB)), READ)
    del big
    assert spare_buffers()[0] == 8
    assert spare_buffers()[1] > kept  # the 6 MB buffer is kept, a smaller one went


def test_pipelined_batch_replies_are_received_one_at_a_time() -> None:
    """A reader that got a batch of this size stops receiving at its end: the next
    reply's bytes stay in the socket, so the buffer becomes the batch's as it is."""
    value = b"p" * (3 * MB)
    _received(value)
    a, b = socket.socketpair()
    sender = threading.Thread(target=b.sendall, args=(_reply(value) * 3,))
    sender.start()
    reader = Reader()
    try:
        batches = []
        for _ in range(3):
            reader.expect_batch(READ, None)
            while (batch := reader.gets()) is False:
                assert reader.recv_from(a) > 0
            assert not reader.has_data()  # nothing of the next reply taken with it
            batches.append(batch)
    finally:
        sender.join()
        a.close()
        b.close()
    assert [x[0][2] for x in batches] == [{b"d": value}] * 3
    assert all(len(x.buf) == len(_reply(value)) for x in batches)


def test_small_pipelined_batch_replies_share_receives() -> None:
    """Replies far below a spare's size are still received several at a time."""
    one = _reply(b"s" * 100)
    a, b = socket.socketpair()
    reader = Reader()
    receives = 0
    try:
        for _ in range(2):  # the second round has the last batch's size as a hint
            b.sendall(one * 20)
            for _ in range(20):
                reader.expect_batch(READ, None)
                while (batch := reader.gets()) is False:
                    assert reader.recv_from(a) > 0
                    receives += 1
                assert batch[0][2] == {b"d": b"s" * 100}
    finally:
        a.close()
        b.close()
    assert receives <= 4
