"""Argument fuzzing of Reader.feed, recv_from and expect_batch, run as a child
process by test_reader_args.py (so a crash is a signal the parent sees, not a dead
test run). Exits 0 when every check holds; an assertion prints its example."""

from __future__ import annotations

import os
import sys

import hiredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from support.resp_compare import DIVERGES, norm

from fastredis._resp import AUTOCLAIM, RANGE, READ, Reader

SCALE = int(os.environ.get("FASTREDIS_FUZZ_SCALE", "1"))
SETTINGS = settings(
    max_examples=400 * SCALE, deadline=None, suppress_health_check=list(HealthCheck)
)

I64 = 2**63
# values around every boundary an offset or a length can cross
edge = st.sampled_from(
    [-I64, -I64 + 1, -(2**62), -2, -1, 0, 1, 2, 3, 5, 9, 2**31, 2**62, I64 - 2, I64 - 1]
)
offset = st.one_of(edge, st.integers(-20, 40), st.integers(-I64, I64 - 1))

REPLIES = [
    b"+OK\r\n",
    b"x$200000\r\n",
    b"$5\r\nhello\r\n:12\r\n",
    b"*2\r\n$1\r\na\r\n*1\r\n$2\r\nbb\r\n",
    b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nk\r\n$1\r\nv\r\n",
]
payload = st.one_of(st.sampled_from(REPLIES), st.binary(max_size=40))
wrap = st.sampled_from([bytes, bytearray, memoryview])


def outcome(reader, data, args) -> tuple:
    """What feed(data, *args) then draining gets() gives, as comparable data."""
    try:
        reader.feed(data, *args)
    except Exception as e:
        return ("feed", type(e).__name__, str(e))
    replies = []
    for _ in range(8):
        try:
            r = reader.gets()
        except Exception as e:
            replies.append(("exc", type(e).__name__))
            break
        if r is False:
            break
        replies.append(norm(r))
    return ("ok", replies)


def wraps_in_hiredis(size: int, off: int, length: int | None) -> bool:
    """hiredis checks off + len > size in C: a sum past 2**63 - 1 wraps around and
    passes, and hiredis then reads outside the buffer (or crashes)."""
    n = size - off if length in (None, -1) else length
    return off >= 0 and n >= 0 and off + n >= I64


@SETTINGS
@given(payload, wrap, offset, st.one_of(st.none(), offset))
def check_feed_like_hiredis(data, kind, off, length):
    args = (off,) if length is None else (off, length)
    buf = kind(data)
    ours = outcome(Reader(), buf, args)
    if wraps_in_hiredis(len(data), off, length):
        assert ours == ("feed", "ValueError", "input is larger than buffer size"), ours
        return
    theirs = outcome(hiredis.Reader(), buf, args)
    if DIVERGES.search(bytes(data)) and "feed" not in (ours[0], theirs[0]):
        return  # the arguments were taken alike; the replies differ on purpose
    assert ours == theirs


class Sock:
    """recv_into writes `write` bytes of `fill`, then returns `ret` (or raises it)."""

    def __init__(self, fill: bytes, write: int, ret):
        self.fill, self.write, self.ret = fill, write, ret

    def recv_into(self, view):
        n = min(self.write, len(view), len(self.fill))
        view[:n] = self.fill[:n]
        if isinstance(self.ret, BaseException):
            raise self.ret
        r = self.ret(n, len(view)) if callable(self.ret) else self.ret
        if isinstance(r, int) and 0 <= r <= len(view):
            self.got = bytes(view[:r])  # what the reader must account (if a liar)
        return r


returns = st.one_of(
    st.sampled_from([lambda n, size: n, lambda n, size: max(n - 1, 0), lambda n, size: size + 1]),
    edge,
    st.sampled_from([None, 1.5, "3", OSError("boom"), BlockingIOError()]),
)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(REPLIES), st.integers(0, 60), returns), max_size=6))
def check_recv_from_any_return(calls):
    """Whatever recv_into returns or raises, the reader keeps exactly the bytes it
    accounted, and those give hiredis's replies."""
    reader, accounted = Reader(), b""
    for fill, write, ret in calls:
        sock = Sock(fill, write, ret)
        try:
            n = reader.recv_from(sock)
        except (ValueError, TypeError, OverflowError, OSError):
            assert not hasattr(sock, "got")
            continue
        assert n == len(sock.got), n
        accounted += sock.got
    oracle = hiredis.Reader()
    if accounted:
        oracle.feed(accounted)
    assert outcome(reader, b"", ()) == outcome(oracle, b"", ())


kinds = st.one_of(st.sampled_from([READ, RANGE, AUTOCLAIM]), edge, st.sampled_from([1.0, "0"]))
encodings = st.sampled_from([None, "utf-8", "latin-1", "nope", 3, b"utf-8"])


@SETTINGS
@given(kinds, encodings, st.sampled_from(REPLIES))
def check_expect_batch_args(kind, encoding, data):
    """Bad kinds and encodings raise at once and leave no expectation behind."""
    reader = Reader()
    try:
        reader.expect_batch(kind, encoding)
    except (ValueError, TypeError, OverflowError, LookupError):
        theirs = hiredis.Reader()
        assert outcome(reader, data, ()) == outcome(theirs, data, ())
        return
    assert kind in (READ, RANGE, AUTOCLAIM) and encoding in (None, "utf-8", "latin-1")
    outcome(reader, data, ())  # any value or exception, never a crash


if __name__ == "__main__":
    for check in (check_feed_like_hiredis, check_recv_from_any_return, check_expect_batch_args):
        check()
    print("ok")
