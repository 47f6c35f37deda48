"""Browser origins: a request from a foreign origin is refused (by `AccessMiddleware` in
`fastredis.server.edge.auth`) unless ``--cors-origin`` lists it."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers

__all__ = ["origin_allowed"]

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _host_port(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    port = _DEFAULT_PORTS.get(scheme)
    if port and netloc.endswith(":" + port):
        return netloc[: -len(port) - 1]
    return netloc


def origin_allowed(origin: str | None, headers: Headers, allowed: Sequence[str]) -> bool:
    """No Origin (not a browser), the request's own host, or an origin listed in
    `allowed` (``*``: any)."""
    if origin is None or "*" in allowed:
        return True
    if origin.rstrip("/").lower() in (a.rstrip("/").lower() for a in allowed):
        return True
    parts = urlsplit(origin)
    host = headers.get("host")
    if not host or not parts.netloc:
        return False
    return _host_port(parts.netloc, parts.scheme) == _host_port(host, parts.scheme)
