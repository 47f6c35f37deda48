"""Waiting in tests: poll a condition until it holds or a deadline passes (not a test module)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "",
    interval: float = 0.005,
) -> Any:
    """Poll `condition` until it returns something truthy and return that; fail the test
    (AssertionError naming `what`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or condition} (last: {value!r})"
            )
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie, exited but not yet reaped, counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
