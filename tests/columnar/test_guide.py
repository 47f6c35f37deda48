"""Every ```python block of docs/guides/columnar.md runs as written, against a test
server (the guide's URL replaced by the fixture's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "columnar.md"
GUIDE_URL = "redis://localhost:6379/0"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_its_examples() -> None:
    assert len(BLOCKS) >= 7
    assert all(GUIDE_URL in block for block in BLOCKS)  # none would touch another server


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_guide_block_runs(block: str, redis_url: str) -> None:
    code = block.replace(GUIDE_URL, redis_url)
    exec(compile(code, f"{GUIDE.name}", "exec"), {"__name__": "guide"})
