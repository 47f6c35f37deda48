"""The .pyi stubs beside the compiled modules match them (mypy.stubtest), so the
types other code is checked against are the ones the core really has."""

from __future__ import annotations

import subprocess
import sys

COMPILED = [
    "fastredis._batch",
    "fastredis._resp",
    "fastredis._writer",
    "fastredis._frames",
    "fastredis._columns",
]


def test_stubs_match_the_compiled_modules():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *COMPILED],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_public_import_names_stay():
    """Names other code imports from the modules the core had before its split."""
    import fastredis
    from fastredis import _frames, _resp

    for name in ["Reader", "StreamBatch", "READ", "RANGE", "AUTOCLAIM", "ProtocolError"]:
        assert hasattr(_resp, name), name
    for name in ["pack_commands", "REFERENCE_MIN", "pull_header", "push_entries"]:
        assert hasattr(_frames, name), name
    assert fastredis.StreamBatch is _resp.StreamBatch
