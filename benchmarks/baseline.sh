#!/usr/bin/env bash
# Build the per-puller server (one XREAD per pull: the commit before the shared-read
# hub) for benchmarks/bench_fanout.py, into .benchmarks/baseline/ (gitignored):
#
#     benchmarks/baseline.sh                 # 04b4cf9^ into .benchmarks/baseline
#     benchmarks/baseline.sh REV [DIR]       # another commit, another place
#
# DIR gets src/ (git archive of REV), venv/ (its own venv, the server extra installed
# from src/, Cython compiled) and COMMIT (the full hash, written last: the bench only
# runs a baseline that has it). bench_fanout looks in DIR = FASTREDIS_BENCH_BASELINE,
# else .benchmarks/baseline.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
rev=${1:-04b4cf9^}
dest=${2:-${FASTREDIS_BENCH_BASELINE:-$root/.benchmarks/baseline}}
commit=$(git -C "$root" rev-parse --verify "$rev^{commit}")

rm -rf "$dest"
mkdir -p "$dest/src"
git -C "$root" archive "$commit" | tar -x -C "$dest/src"
python3 -m venv "$dest/venv"
"$dest/venv/bin/pip" install -q "$dest/src[server]"
# built and whole (from $dest: no fastredis/ of a checkout in the way)
(cd "$dest" && venv/bin/python -c "import fastredis._resp; from fastredis.server import create_app")
echo "$commit" > "$dest/COMMIT"
echo "per-puller baseline $commit built in $dest"
