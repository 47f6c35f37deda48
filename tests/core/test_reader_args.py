"""Reader arguments never make it read outside what it was given: the feed(buf, off,
len) calls that used to return heap memory or crash raise, and argument fuzzing of
feed / recv_from / expect_batch runs in a child process so a crash is seen."""

from __future__ import annotations

import os
import subprocess
import sys

import hiredis
import pytest

from fastredis._resp import Reader

I64 = 2**63


@pytest.mark.parametrize(
    ("data", "off", "length"),
    [
        (b"x$200000\r\n", 1, I64 - 1),  # used to give 200,000 bytes of heap memory
        (b"x$100000000\r\n", 1, I64 - 1),  # used to die with SIGSEGV
        (b"+OK\r\n", I64 - 2, I64 - 1),  # used to crash
        (b"+OK\r\n", 2**62, 2**62),
        (b"+OK\r\n", 6, 0),
        (b"+OK\r\n", 0, 6),
    ],
)
def test_feed_refuses_a_range_past_the_buffer(data, off, length):
    reader = Reader()
    with pytest.raises(ValueError, match="input is larger than buffer size"):
        reader.feed(data, off, length)
    assert reader.gets() is False and reader.len() == 0
    with pytest.raises(Exception):  # noqa: B017 - hiredis refuses too (its type varies)
        h = hiredis.Reader()
        h.feed(data, off, length)
        h.gets()


@pytest.mark.parametrize(("off", "length"), [(-1, 2), (0, -2), (6, -1), (-I64, -1)])
def test_feed_negative_input_as_hiredis(off, length):
    with pytest.raises(ValueError, match="negative input"):
        Reader().feed(b"+OK\r\n", off, length)
    with pytest.raises(ValueError, match="negative input"):
        hiredis.Reader().feed(b"+OK\r\n", off, length)


def test_feed_slice_inside_the_buffer():
    reader = Reader()
    reader.feed(b"xx+OK\r\n:1\r\nyy", 2, 9)
    assert [reader.gets(), reader.gets(), reader.gets()] == [b"OK", 1, False]
    reader.feed(b"+A\r\n", 4)  # off == len(buf): nothing
    assert reader.gets() is False


def test_argument_fuzz_in_a_child_process():
    child = os.path.join(os.path.dirname(__file__), "reader_args_child.py")
    proc = subprocess.run(
        [sys.executable, child], capture_output=True, text=True, timeout=280, check=False
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.stdout.strip().endswith("ok")
