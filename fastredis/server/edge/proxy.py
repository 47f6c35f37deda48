"""Behind a reverse proxy: the sub-path the proxy serves the app at, and what a trusted
proxy says about the request it forwards.

* ``root_path`` (``--root-path``): the proxy serves the app at this prefix and strips
  it before forwarding (nginx: ``location /PREFIX/ { proxy_pass http://HOST:PORT/; }``).
  It goes in every scope's ``root_path``, so the pages put it in front of their links
  and websocket URLs; the path itself is left as received, so routing and every check
  on it see the same path as without a proxy.
* When the peer (the TCP client) is one of `trusted` (``--forwarded-allow-ips``:
  addresses, networks, or ``*``), its ``X-Forwarded-For`` gives the client's address,
  ``X-Forwarded-Proto`` the scheme and ``X-Forwarded-Host`` the host the browser
  asked for, which the same-origin check then compares with the page's ``Origin``.
  The headers of any other peer are ignored: anybody can send them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ProxyMiddleware"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SECURE = {"http": "https", "websocket": "wss"}
_PLAIN = {"http": "http", "websocket": "ws"}


def _values(headers: dict[bytes, bytes], name: bytes) -> list[str]:
    """The comma-separated values of a header (each proxy on the way may add one)."""
    raw = headers.get(name, b"").decode("latin-1")
    return [v.strip() for v in raw.split(",") if v.strip()]


class ProxyMiddleware:
    """ASGI middleware: the root path on every request, forwarded headers from trusted
    proxies (see the module)."""

    def __init__(self, app: ASGIApp, root_path: str, trusted: Sequence[str]) -> None:
        self.app = app
        self.root_path = root_path
        self.any = "*" in trusted
        self.networks: list[_Network] = [
            ipaddress.ip_network(t, strict=False) for t in trusted if t != "*"
        ]

    def trusts(self, peer: str | None) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:  # a unix socket, or no peer known
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope["root_path"] = self.root_path
            client = scope.get("client")
            if self.trusts(client[0] if client else None):
                self._forwarded(scope)
        await self.app(scope, receive, send)

    def _forwarded(self, scope: Scope) -> None:
        headers = dict(scope["headers"])
        # the scheme and host the browser used: the first proxy's, nearest the browser
        proto = next(iter(_values(headers, b"x-forwarded-proto")), "").lower()
        if proto in ("http", "https", "ws", "wss"):
            secure = proto in ("https", "wss")
            scope["scheme"] = (_SECURE if secure else _PLAIN)[scope["type"]]
        host = next(iter(_values(headers, b"x-forwarded-host")), None)
        if host is not None:
            scope["headers"] = [
                *((k, v) for k, v in scope["headers"] if k != b"host"),
                (b"host", host.encode("latin-1")),
            ]
        # the client: walking back from the nearest proxy, the first address not trusted
        chain = _values(headers, b"x-forwarded-for")
        if chain:
            client = next((a for a in reversed(chain) if not self.trusts(a)), chain[0])
            scope["client"] = (client, 0)
