"""The code examples of README.md and docs/**/*.md, found and run as a user would run them.

Every fenced block is an example. ```python blocks run as scripts and ```bash blocks with
bash, each in a process of its own (so a `__main__` guard, a Dask cluster or an event loop
behaves as it does for a user); ```graphql blocks are sent to the server's /graphql.
The addresses the docs use are pointed at servers started by the test fixtures first:

| in the docs | in the test |
|---|---|
| `localhost:8000` | a `fastredis` server app, open |
| `localhost:8001` | the same app with `--jwt-secret` set to `JWT_SECRET` |
| `redis://localhost:6379`, `redis://localhost:6380` | the session's embedded Valkey |
| `redis://node-1:7000` | the session's embedded Redis Cluster |

A block whose first line is a comment `# not run: WHY` is not run (a command that
installs packages or serves forever); `text` and `json` blocks are output or data, not
code. Blocks in any other language must be marked too, so none is left unchecked by
accident.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = frozenset({"python", "bash", "graphql"})
OUTPUT = frozenset({"text", "json"})  # output, frames, data: nothing to run
NOT_RUN = re.compile(r"^\s*(?:#|//)\s*not run:\s*(?P<why>.+)$")
JWT_SECRET = "change-me-to-32-or-more-random-bytes"

_FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Example:
    """One fenced block: where it is, its language and its source (dedented)."""

    path: Path
    line: int
    lang: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def not_run(self) -> str | None:
        """Why the block is not run, when its first line says so."""
        first = self.source.lstrip("\n").split("\n", 1)[0]
        match = NOT_RUN.match(first)
        return match["why"] if match else None


def doc_files() -> list[Path]:
    """README.md, then every page of the docs site in path order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples_in(path: Path) -> Iterator[Example]:
    text = path.read_text(encoding="utf-8")
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        body = textwrap.dedent(match["body"])
        yield Example(path, line, match["lang"].lower(), body)


def all_examples() -> list[Example]:
    return [example for path in doc_files() for example in examples_in(path)]


def pointed_at(source: str, addresses: dict[str, str]) -> str:
    """`source` with each documented address replaced by the fixture's."""
    for documented, real in addresses.items():
        source = source.replace(documented, real)
    if "6379" in source or "6380" in source:  # a Redis of the machine's: never touched
        raise AssertionError("an example still names a local Redis port after rewriting")
    return source
