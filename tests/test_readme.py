"""What the README promises a new user holds: its test command is the one CI runs, and
the batch-read loop the docs give users to copy survives a quiet stream. (Every example
of the README and the docs also runs as written: tests/test_docs.py.)"""

from __future__ import annotations

import re
import threading
from typing import Any

import redis
from support.doc_examples import ROOT, examples_in
from support.waiting import wait_until

from fastredis.redis_io import make_client

README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"


def _snippet(page: str, marker: str) -> str:
    """The python code block of `page` that contains `marker`."""
    [block] = [
        e.source for e in examples_in(ROOT / page) if e.lang == "python" and marker in e.source
    ]
    return block


def _xread_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    """The README's fresh-machine test command, after its venv part, is a line of .ci/run
    (which makes the venv itself), so the command a user copies is the one CI proves."""
    commands = [
        line for e in examples_in(README) if e.lang == "bash" for line in e.source.splitlines()
    ]
    [test_command] = [c for c in commands if c.startswith("python3 -m venv") and "[test]" in c]
    tail = test_command.split(" && ", 2)[2]  # after `python3 -m venv .venv && . activate`
    assert tail in CI.read_text().splitlines(), tail


def test_the_readme_serve_command_installs_what_serve_needs() -> None:
    """The fresh-machine server command installs the extras `fastredis serve` and the
    first steps' client use."""
    commands = [
        line for e in examples_in(README) if e.lang == "bash" for line in e.source.splitlines()
    ]
    [serve] = [c for c in commands if c.startswith("python3 -m venv") and "serve" in c]
    extras = re.search(r'pip install -e "\.\[([\w,]+)\]"', serve)
    assert extras and {"server", "client"} <= set(extras[1].split(",")), serve
    assert serve.endswith("&& fastredis serve"), serve


def test_the_batch_read_loop_survives_an_empty_read(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    namespace: dict[str, Any] = {}
    source = _snippet("docs/guides/batch-reads.md", "def follow(")
    exec(source.split("\n\nentries = ")[0], namespace)  # the function, not its demo
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
