"""Write one run of a benchmark to benchmarks/results/ (the format: results/README.md).

    path = write_run("server", table, rows)   # results/2026-12-04-server.md + .json

The markdown file starts with what the run was (date, commit, command, machine), then
the table; the JSON beside it holds the raw rows. A second run on the same day gets
`-2`, `-3`: results are added, never overwritten.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=RESULTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def _free_path(name: str, day: str) -> Path:
    stem, n = f"{day}-{name}", 1
    while (RESULTS / f"{stem}.md").exists():
        n += 1
        stem = f"{day}-{name}-{n}"
    return RESULTS / f"{stem}.md"


def write_run(name: str, table: str, rows: Any) -> Path:
    """Record this run's `table` (markdown) and `rows` (JSON-able); the .md path."""
    RESULTS.mkdir(exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    path = _free_path(name, now.date().isoformat())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    head = (
        f"# {name}: run of {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"* commit: {_commit()}\n"
        f"* command: `{' '.join(sys.argv)}`\n"
        f"* machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load} at the end\n\n"
    )
    path.write_text(head + table.rstrip() + "\n")
    path.with_suffix(".json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return path
