"""Type contract of the compiled RESP writer (src_cython/fastredis/_writer.pyx)."""

from typing import Any

REFERENCE_MIN: int  # pack_commands references (does not copy) args of at least this many bytes

def pack_commands(commands: Any) -> list[bytes | memoryview]:
    """RESP-encode commands (sequences of bytes, str, int, float or buffer arguments)
    into the chunks redis-py would send; arguments of at least REFERENCE_MIN bytes
    are referenced as memoryviews, not copied. Pass the result to `socket.sendmsg`,
    `writelines` or redis-py's `send_packed_command`."""
