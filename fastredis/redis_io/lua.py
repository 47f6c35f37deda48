"""Lua scripts called by their hash (EVALSHA), their text sent only when Redis lacks it.

EVAL sends a script's whole text with every call, and Redis reads and hashes it each
time: for the producer script (1.6 KB) that was most of a message's bytes, read and
hashed by Redis for every message. The hot writes (`fastredis.server.writes`, the streamz
sinks) build ``EVALSHA sha ...`` commands instead (`LuaScript.command`).

Redis forgets its scripts on SCRIPT FLUSH and on a restart, and a new primary after a
failover may not have them: the reply is then NOSCRIPT, and the script did not run.
The caller sends that command again as EVAL (`with_text`), which also loads the script
for the calls that follow. redis-py's `Script` objects do the same per call, but in a
pipeline they check (SCRIPT EXISTS) before every execute, a round trip more.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ["LuaScript", "is_noscript", "load_commands", "with_text"]

_EVALSHA = b"EVALSHA"
_BY_SHA: dict[bytes, bytes] = {}  # every LuaScript made: sha -> text


class LuaScript:
    """One script: its text and SHA1, known to `with_text` once made."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text.encode()
        self.sha = hashlib.sha1(self.text).hexdigest().encode()
        _BY_SHA[self.sha] = self.text

    def command(self, numkeys: int, *args: Any) -> list[Any]:
        """``EVALSHA sha numkeys *args`` as a command list."""
        return [_EVALSHA, self.sha, numkeys, *args]


def with_text(command: list[Any]) -> list[Any]:
    """An EVALSHA command of a `LuaScript` as the EVAL that sends its text (other
    commands as they are)."""
    if command[0] != _EVALSHA:
        return command
    return [b"EVAL", _BY_SHA[command[1]], *command[2:]]


def is_noscript(reply: Any) -> bool:
    """Whether `reply` is Redis saying it does not have the script (it did not run)."""
    return isinstance(reply, NoScriptError)


def load_commands() -> list[list[Any]]:
    """``SCRIPT LOAD`` of every `LuaScript` made so far."""
    return [[b"SCRIPT", b"LOAD", text] for text in _BY_SHA.values()]
