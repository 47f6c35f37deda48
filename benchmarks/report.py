"""Turn a pytest-benchmark JSON file into the README's markdown tables.

    pytest benchmarks/bench_reader.py --benchmark-only --benchmark-json=out.json
    python benchmarks/report.py out.json
Each group is one table; `x` is the speed relative to the group's baseline row
(the alternative a user would pick, or the floor), so ratios come from one run.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

BASELINES = ("hiredis+redis-py", "redis-py+hiredis", "handwritten", "streamz-emit", "direct")


def _label(bench: dict) -> str:
    params = dict(bench.get("params") or {})
    params.pop("case", None)
    return " ".join(str(v) for v in params.values()) or bench["name"]


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench["group"] or "default"].append(bench)
    for group, benches in groups.items():
        base = next(
            (b for b in benches if any(_label(b).startswith(x) for x in BASELINES)), benches[0]
        )
        base_t = base["stats"]["median"]
        print(f"\n**{group}** (median of rounds; x = speed vs {_label(base)})\n")
        print("| variant | median ms | entries/s | MB/s | x |")
        print("|---|---:|---:|---:|---:|")
        for b in sorted(benches, key=lambda b: b["stats"]["median"]):
            t = b["stats"]["median"]
            info = b.get("extra_info", {})
            entries = info.get("entries")
            nbytes = info.get("payload_bytes")
            eps = f"{entries / t:,.0f}" if entries else ""
            mbs = f"{nbytes / t / 1e6:,.0f}" if nbytes else ""
            print(f"| {_label(b)} | {t * 1e3:.2f} | {eps} | {mbs} | {base_t / t:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
