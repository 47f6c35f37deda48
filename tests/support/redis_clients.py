"""What CLIENT LIST says of a server's Redis connections (named by its client_name)."""

from __future__ import annotations

import threading

import redis


def connections_named(r: redis.Redis, name: str) -> int:
    """Open Redis connections whose client name is `name`."""
    return sum(1 for c in r.client_list() if c.get("name") == name)


def blocked_xreads(r: redis.Redis, name: str) -> int:
    """Connections named `name` parked in a blocking XREAD."""
    return sum(
        1
        for c in r.client_list()
        if c.get("name") == name and c.get("cmd") == "xread" and "b" in c.get("flags", "")
    )


class PeakConnections:
    """The most connections named `name` that `r` saw at once, sampled in a thread while
    the `with` block runs."""

    def __init__(self, r: redis.Redis, name: str) -> None:
        self.r = r
        self.name = name
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.most = max(self.most, connections_named(self.r, self.name))
            self.samples += 1

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.most = max(self.most, connections_named(self.r, self.name))


def data_keys(r: redis.Redis) -> list[bytes]:
    """The keys of `r` but the epochs the server stores beside streams (XEPOCH:...)."""
    return [k for k in r.scan_iter() if not bytes(k).startswith(b"XEPOCH:")]
