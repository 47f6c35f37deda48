"""Comparing our reader's replies with hiredis's, as values that keep their types."""

from __future__ import annotations

import math
import re

import hiredis

# hiredis diverges on purpose for: '!' (we accept blob errors), lengths over 512 MB
# or counts it preallocates (long digit runs), duplicate/unhashable map keys ('%', '|')
DIVERGES = re.compile(rb"[!%|]|\d{6}")


def norm(x):
    """A comparable form of a reply: keeps types (bytes/str, bool/int), error
    classes by name, push notifications, nan."""
    if isinstance(x, BaseException):
        return ("exc", type(x).__name__, x.args)
    if isinstance(x, list):
        tag = "push" if isinstance(x, hiredis.PushNotification) else "list"
        return (tag, [norm(v) for v in x])
    if isinstance(x, dict):
        return ("dict", [(norm(k), norm(v)) for k, v in x.items()])
    if isinstance(x, float) and math.isnan(x):
        return ("float", "nan")
    return (type(x).__name__, x)
