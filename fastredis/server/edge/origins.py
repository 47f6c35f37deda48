"""Browser origins: a request from a foreign origin is refused (by `AccessMiddleware` in
`fastredis.server.edge.auth`) unless ``--cors-origin`` lists it. The own origin is
the request's scheme and host, default ports left out."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers

__all__ = ["origin_allowed", "own_origin"]

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_WEB_SCHEME = {"ws": "http", "wss": "https"}  # a websocket's page is http(s)


def _host_port(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    port = _DEFAULT_PORTS.get(scheme)
    if port and netloc.endswith(":" + port):
        return netloc[: -len(port) - 1]
    return netloc


def own_origin(headers: Headers, scheme: str) -> str | None:
    """The request's own origin: its scheme (http/https) and Host, as a browser writes
    it (a default port left out); None without a Host."""
    host = headers.get("host")
    if not host:
        return None
    web = _WEB_SCHEME.get(scheme, scheme)
    return f"{web}://{_host_port(host, web)}"


def origin_allowed(
    origin: str | None, headers: Headers, allowed: Sequence[str], scheme: str = "http"
) -> bool:
    """No Origin (not a browser), the request's own origin (behind a trusted proxy, the
    forwarded scheme and host: `fastredis.server.edge.proxy`), or an origin listed in
    `allowed` (``*``: any)."""
    if origin is None or "*" in allowed:
        return True
    if origin.rstrip("/").lower() in (a.rstrip("/").lower() for a in allowed):
        return True
    parts = urlsplit(origin)
    if not parts.netloc:
        return False
    given = f"{parts.scheme.lower()}://{_host_port(parts.netloc, parts.scheme.lower())}"
    return given == own_origin(headers, scheme)
