"""The README's snippets that a user copies into a loop run as written."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import redis
from support.waiting import wait_until

from fastredis.redis_io import make_client

README = Path(__file__).resolve().parent.parent / "README.md"


def _snippet(marker: str) -> str:
    """The README's python code block containing `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    [block] = [b for b in blocks if marker in b]
    return block


def _xread_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))


def test_the_batch_read_loop_survives_an_empty_read(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    namespace: dict[str, Any] = {}
    exec(_snippet("def follow("), namespace)
    for i in range(3):
        plain_redis.xadd("sensors", {"v": str(i)})
    entries = namespace["follow"](make_client(url=redis_url), {"sensors": "0"})
    assert [fields for _, _, fields in (next(entries) for _ in range(3))] == [
        {"v": "0"}, {"v": "1"}, {"v": "2"}
    ]  # fmt: skip
    calls = _xread_calls(plain_redis)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(next(entries)), daemon=True)
    reader.start()
    # one read has come back empty (its BLOCK ran out): the loop must go on reading
    wait_until(lambda: _xread_calls(plain_redis) >= calls + 1, 10, what="an empty read")
    plain_redis.xadd("sensors", {"v": "after"})
    reader.join(10)
    assert got and got[0][0] == "sensors" and got[0][2] == {"v": "after"}
