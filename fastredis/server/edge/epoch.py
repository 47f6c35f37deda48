"""The epoch of a stream: a token stored beside it when it is created.

A reader that comes back with a cursor and the epoch it saw can tell whether the stream
is still the one it was reading (`fastredis.server.reads.resume`): a stream deleted and
made anew gets a new epoch, even when its new ids repeat the old ones.

The key is ``XEPOCH:{sid}`` -- the braces are a Redis Cluster hash tag, so the epoch
lives in the stream's slot and is written in the same script as the stream's first
entry. A sid with a hash tag of its own (``{cam1}:rgb``) keeps it: ``XEPOCH:{cam1}:rgb``.
A sid that has no tag but holds a ``}`` cannot be tagged this way: it has no epoch
(`epoch_key` is None, and readers report ``epoch: null``).

The server's writers set the epoch when their write creates the stream
(`fastredis.server.writes.entries`, and ``producer=`` pushes); a stream written by
others gets one the first time the server looks at it (SET NX,
`fastredis.server.reads.resume`).

When a stream is deleted (the server never deletes one: others do, with DEL, UNLINK
or an expiry), its epoch key is removed the next time the server looks at the stream
and finds it missing (in the same script). No TTL: an epoch that expired beside a
live stream would be made anew, and every resuming reader told of a recreation that
never happened (keeping it alive would cost a write per entry). Removing it on sight
also helps detection: a stream deleted and made anew by other tools gets a fresh
epoch, provided the server looked while it was gone (a reader resuming then, or any
resuming reader of it: they look before each read). Epoch keys of streams deleted and
never looked at again stay; each is one short string.
"""

from __future__ import annotations

import secrets

__all__ = ["EPOCH_PREFIX", "epoch_key", "is_epoch_key", "new_epoch"]

EPOCH_PREFIX = "XEPOCH:"


def _has_hash_tag(sid: str) -> bool:
    start = sid.find("{")
    return start >= 0 and sid.find("}", start + 1) > start + 1


def epoch_key(sid: str) -> str | None:
    """The key holding the epoch of stream `sid`, in its hash slot (None: a sid with
    a ``}`` and no hash tag, which cannot have one; see the module)."""
    if _has_hash_tag(sid):
        return EPOCH_PREFIX + sid
    if "}" in sid:
        return None
    return f"{EPOCH_PREFIX}{{{sid}}}"


def is_epoch_key(sid: str) -> bool:
    return sid.startswith(EPOCH_PREFIX)


def new_epoch() -> str:
    """A fresh epoch token: 16 hex digits."""
    return secrets.token_hex(8)
