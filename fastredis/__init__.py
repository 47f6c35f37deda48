"""fastredis: move data through Redis Streams fast."""

try:
    from fastredis._resp import AUTOCLAIM, RANGE, READ, Reader, StreamBatch
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "fastredis's compiled core (fastredis._resp) is missing: build it with "
        "`pip install .` (or `pip install -e .`), which compiles src_cython/"
    ) from exc

__all__ = ["AUTOCLAIM", "RANGE", "READ", "Reader", "StreamBatch"]
__version__ = "0.1.0"
