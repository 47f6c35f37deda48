"""Argument checks of the streamz sources and sinks: seconds, counts, names, start ids."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, overload

from fastredis.ids import parse_id


def block_ms(timeout: float | None, what: str = "timeout") -> int:
    """Seconds (float) -> BLOCK milliseconds; None or anything below 1 ms means 0 (forever)."""
    if timeout is None:
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be >= 0 seconds (0 blocks forever), not {timeout!r}")
    if timeout < 0.001 or math.isinf(timeout):
        return 0
    return max(1, round(timeout * 1000))


@overload
def check_count(
    count: int | None, what: str = ..., allow_none: Literal[True] = ...
) -> int | None: ...
@overload
def check_count(count: int | None, what: str, allow_none: Literal[False]) -> int: ...
def check_count(count: int | None, what: str = "count", allow_none: bool = True) -> int | None:
    if count is None and allow_none:
        return None
    wanted = "a positive int or None" if allow_none else "a positive int"
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"{what} must be {wanted}, not {count!r}")
    if count < 1:
        raise ValueError(f"{what} must be {wanted}, not {count!r}")
    return count


def check_client_params(client_params: Any) -> dict[str, Any]:
    """client_params as given (a mapping of redis-py arguments, or None) copied into a dict."""
    if client_params is not None and not isinstance(client_params, Mapping):
        raise TypeError(
            f"client_params must be a dict of redis-py arguments, not {client_params!r}"
        )
    return dict(client_params or {})


@overload
def check_positive(
    value: float | None, what: str, allow_none: Literal[True] = ...
) -> float | None: ...
@overload
def check_positive(value: float | None, what: str, allow_none: Literal[False]) -> float: ...
def check_positive(value: float | None, what: str, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


def check_name(name: Any, what: str) -> str:
    if isinstance(name, bytes):
        name = name.decode()
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty str, not {name!r}")
    return name


def check_start_id(value: Any, stream: str, allow_dollar: bool = True) -> str:
    """A start id as given ('$', '0', '1700000000000-0', 5, ...) checked and made a str."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str):
        if value == "$" and allow_dollar:
            return value
        try:
            parse_id(value)
        except ValueError:
            pass
        else:
            return value
    allowed = "'$', '0' or an entry id like '1700000000000-0'" if allow_dollar else "an entry id"
    raise ValueError(f"start id for stream {stream!r} must be {allowed}, not {value!r}")


def normalize_streams(streams: Any, default_id: Any, allow_dollar: bool = True) -> dict[str, str]:
    """str / list / tuple / dict notation -> {stream name: start id}."""
    if isinstance(streams, (str, bytes)):
        streams = [streams]
    if isinstance(streams, Mapping):
        pairs = list(streams.items())
    elif isinstance(streams, (list, tuple, set, frozenset)):
        pairs = [(name, default_id) for name in streams]
    else:
        raise TypeError(
            f"streams must be a str, a list of str or a dict of name -> start id, not {streams!r}"
        )
    if not pairs:
        raise ValueError("streams must name at least one stream")
    out: dict[str, str] = {}
    for name, start in pairs:
        name = check_name(name, "a stream name")
        out[name] = check_start_id(start, name, allow_dollar)
    return out


def check_batch(batch: Any) -> bool | str:
    """A source's ``batch`` argument (the modes: streamz/batch_modes.py); "arrow"
    probes pyarrow now, so a missing extra is said at construction."""
    if batch is False or batch is True or batch == "messages":
        return batch
    if batch == "arrow":
        from fastredis.columnar import _require

        _require("pyarrow")
        return "arrow"
    raise ValueError(f"batch must be False, True, 'messages' or 'arrow', not {batch!r}")
