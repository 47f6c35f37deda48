"""What CLIENT LIST says of a server's Redis connections (named by its client_name)."""

from __future__ import annotations

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
