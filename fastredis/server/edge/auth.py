"""Access control: API keys and JWT stream scopes, log redaction.

With ``--api-key`` or ``--jwt-secret`` / ``--jwt-public-key`` set, every endpoint
but the health checks needs a token, as ``Authorization: Bearer TOKEN`` or
``?token=TOKEN``. An API key grants everything; a JWT grants what its ``streams``
claim says, ``{"read": [glob, ...], "write": [glob, ...]}`` (`fnmatch` patterns over
stream ids; a missing list grants nothing). ``exp`` and ``nbf`` are honoured.

`AccessMiddleware` checks the token once per request or socket (at the handshake),
refuses foreign browser origins, and leaves the `Grant` in the ASGI scope; the
endpoints ask it with `require_read` / `require_write` (HTTP 403, GraphQL error),
`admit` (a websocket handshake refused with 403) and `write_check` (a push
message naming a stream outside the write scope: close 1008, nothing written).
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from fastredis.server.edge.origins import origin_allowed, own_origin
from fastredis.server.edge.protocol import CLOSE_POLICY, BadInput, parse_sids

__all__ = [
    "ALL_STREAMS_PATHS",
    "FULL_ACCESS",
    "OPEN_PATHS",
    "AccessMiddleware",
    "Forbidden",
    "Grant",
    "TokenChecker",
    "Unauthorized",
    "admit",
    "grant_of",
    "install_log_redaction",
    "readable",
    "require_read",
    "require_write",
    "write_check",
]

GRANT_KEY = "fastredis.grant"  # where the middleware leaves the Grant in the scope
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # no token needed
# paths that show every stream's name (Prometheus labels): only for tokens that may read
# every stream
ALL_STREAMS_PATHS = frozenset({"/metrics"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # no origin check
JWT_PUBLIC_ALGORITHMS = {"RSA": "RS256", "EC": "ES256"}
MAX_TOKEN_BYTES = 16 * 1024
VERIFIED_CACHE = 1024  # verified JWTs remembered (all forgotten when full)


class Unauthorized(Exception):
    """No token, or one that does not verify: HTTP 401."""


class Forbidden(BadInput):
    """A valid token used outside its scope: HTTP 403 / close 1008."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, CLOSE_POLICY, 403)


# -- grants ----------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What a request may do: glob patterns of the streams it may read and write
    (``None``: every stream)."""

    read: tuple[str, ...] | None = None
    write: tuple[str, ...] | None = None

    def may_read(self, sid: str) -> bool:
        return self.read is None or any(fnmatchcase(sid, p) for p in self.read)

    def may_write(self, sid: str) -> bool:
        return self.write is None or any(fnmatchcase(sid, p) for p in self.write)

    @property
    def reads_everything(self) -> bool:
        return self.read is None or "*" in self.read


FULL_ACCESS = Grant()


def _patterns(claim: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claim.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise Unauthorized(f"token claim streams.{name} must be a list of glob strings")
    return tuple(value)


def grant_from_claims(claims: dict[str, Any]) -> Grant:
    """The Grant of a verified JWT's claims (no ``streams`` claim: nothing)."""
    streams = claims.get("streams", {})
    if not isinstance(streams, dict):
        raise Unauthorized('token claim streams must be {"read": [...], "write": [...]}')
    return Grant(read=_patterns(streams, "read"), write=_patterns(streams, "write"))


# -- tokens ----------------------------------------------------------------------


def _load_public_key(path: str) -> tuple[Any, str]:
    """The RSA or EC public key in the PEM file `path`, and its JWT algorithm."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        with open(path, "rb") as f:
            key = load_pem_public_key(f.read())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the JWT public key {path}: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, JWT_PUBLIC_ALGORITHMS["RSA"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, JWT_PUBLIC_ALGORITHMS["EC"]
    raise ValueError(f"the JWT public key {path} is neither RSA nor EC")


class TokenChecker:
    """Turns a token into a Grant, or raises Unauthorized saying why not."""

    def __init__(
        self,
        api_keys: Sequence[str] = (),
        jwt_secret: str | None = None,
        jwt_public_key: str | None = None,
    ) -> None:
        self._api_keys = [k.encode() for k in api_keys]
        self._keys: dict[str, Any] = {}  # JWT algorithm -> key
        # tokens verified already -> (grant, nbf, exp): a REST client sends the same
        # token with every request, and a signature check costs ~100 us
        self._verified: dict[str, tuple[Grant, float, float]] = {}
        if jwt_secret:
            self._keys["HS256"] = jwt_secret
        if jwt_public_key:
            key, algorithm = _load_public_key(jwt_public_key)
            self._keys[algorithm] = key
        if self._keys:
            import jwt  # noqa: F401  (fail at startup, not at the first request)

    @property
    def enabled(self) -> bool:
        return bool(self._api_keys or self._keys)

    @classmethod
    def from_settings(cls, settings: Any) -> TokenChecker:
        return cls(settings.api_keys, settings.jwt_secret, settings.jwt_public_key)

    def check(self, token: str | None) -> Grant:
        if not token:
            raise Unauthorized("a token is needed (Authorization: Bearer TOKEN or ?token=)")
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("token is too long")
        raw = token.encode("utf-8", "replace")
        # compare with every key, so the time taken does not tell which one is close
        if sum(hmac.compare_digest(raw, key) for key in self._api_keys):
            return FULL_ACCESS
        if not self._keys:
            raise Unauthorized("token is not a valid API key")
        cached = self._verified.get(token)
        now = time.time()
        if cached is not None and cached[1] <= now < cached[2]:
            return cached[0]
        claims = self._decode_jwt(token)
        grant = grant_from_claims(claims)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()
        valid_from, valid_until = claims.get("nbf", 0), claims.get("exp", math.inf)
        if isinstance(valid_from, (int, float)) and isinstance(valid_until, (int, float)):
            self._verified[token] = (grant, valid_from, valid_until)
        return grant

    def _decode_jwt(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.DecodeError:
            raise Unauthorized("token is neither an API key nor a JWT") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None or not isinstance(algorithm, str):
            accepted = ", ".join(sorted(self._keys))
            raise Unauthorized(
                f"JWT algorithm {algorithm!r} is not accepted (accepted: {accepted})"
            )
        try:
            return jwt.decode(token, key, algorithms=[algorithm])
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token is not valid yet (nbf)") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None


# -- the middleware --------------------------------------------------------------


def take_token(scope: Scope) -> str | None:
    """The request's token; ``token`` is removed from the scope's query string (so
    neither the endpoints nor the access log see it)."""
    query: bytes = scope.get("query_string", b"")
    found = None
    if b"token" in query:
        kept = []
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if unquote_plus(name.decode("latin-1")) == "token":
                found = unquote_plus(value.decode("latin-1"))
            else:
                kept.append(part)
        scope["query_string"] = b"&".join(kept)
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return found


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, reason: str) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    response = JSONResponse({"error": reason}, status_code=status, headers=headers)
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    ws = WebSocket(scope, receive, send)
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await ws.send_denial_response(response)
    else:  # an ASGI server without the extension answers a close before accept with 403
        await ws.close(CLOSE_POLICY, reason)


class AccessMiddleware:
    """Checks the origin and the token of every HTTP request and websocket handshake
    and leaves the request's Grant in its scope."""

    def __init__(self, app: ASGIApp, checker: TokenChecker, cors_origins: Sequence[str]) -> None:
        self.app = app
        self.checker = checker
        self.cors_origins = list(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = take_token(scope)
        if kind == "websocket" or scope.get("method") not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            scheme = scope.get("scheme", "http")
            if not origin_allowed(origin, headers, self.cors_origins, scheme):
                own = own_origin(headers, scheme)
                reason = (
                    f"origin {origin} is not allowed (see --cors-origin); this server's "
                    f"own is {own} (behind a reverse proxy: --forwarded-allow-ips)"
                )
                await _refuse(scope, receive, send, 403, reason)
                return
        grant = FULL_ACCESS
        if self.checker.enabled and scope.get("path") not in OPEN_PATHS:
            try:
                grant = self.checker.check(token)
            except Unauthorized as exc:
                await _refuse(scope, receive, send, 401, str(exc))
                return
            if scope.get("path") in ALL_STREAMS_PATHS and not grant.reads_everything:
                reason = f"{scope['path']} names every stream: a token that may read all is needed"
                await _refuse(scope, receive, send, 403, reason)
                return
        scope[GRANT_KEY] = grant
        await self.app(scope, receive, send)


# -- what endpoints call ---------------------------------------------------------


def grant_of(conn: Any) -> Grant:
    """The Grant of a Starlette Request/WebSocket (or an ASGI scope, or a Grant)."""
    if isinstance(conn, Grant):
        return conn
    scope = conn if isinstance(conn, dict) else conn.scope
    return scope.get(GRANT_KEY, FULL_ACCESS)


def require_read(conn: Any, sids: Iterable[str]) -> None:
    """Raise Forbidden unless the request may read every one of `sids`."""
    grant = grant_of(conn)
    for sid in sids:
        if not grant.may_read(sid):
            raise Forbidden(f"token may not read stream {sid!r}")


def require_write(conn: Any, sids: Iterable[str]) -> None:
    """Raise Forbidden unless the request may write every one of `sids`."""
    grant = grant_of(conn)
    for sid in sids:
        if not grant.may_write(sid):
            raise Forbidden(f"token may not write stream {sid!r}")


def readable(conn: Any, sids: Iterable[str]) -> list[str]:
    """Those of `sids` the request may read (for listings)."""
    grant = grant_of(conn)
    return [sid for sid in sids if grant.may_read(sid)]


async def admit(ws: WebSocket, mode: str) -> bool:
    """Before the handshake of a socket on ``{sid}`` of its path: refuse it with 403
    (False) unless the token may `mode` ("read"/"write") every stream of the path.
    A path that does not parse is left to the endpoint, which says why."""
    try:
        sids = parse_sids(ws.path_params["sid"])
        (require_write if mode == "write" else require_read)(ws, sids)
    except Forbidden as exc:
        await _refuse(ws.scope, ws.receive, ws.send, 403, exc.reason)
        return False
    except BadInput:
        pass
    return True


_CACHE_SIDS = 4096  # per socket: the streams already found writable


def write_check(conn: Any) -> Callable[[Iterable[str]], None] | None:
    """None when the request may write every stream; else a check for the streams
    a push header names, raising Forbidden (close 1008) before anything is written."""
    grant = grant_of(conn)
    if grant.write is None:
        return None
    allowed: set[str] = set()

    def check(sids: Iterable[str]) -> None:
        for sid in sids:
            if sid in allowed:
                continue
            if not grant.may_write(sid):
                raise Forbidden(
                    f"token may not write stream {sid!r}; nothing of this message was written"
                )
            if len(allowed) < _CACHE_SIDS:
                allowed.add(sid)

    return check


# -- logs ------------------------------------------------------------------------

_SECRET_PATTERNS = (
    re.compile(r"(?<![\w-])(token=)[^&\s\"']*", re.IGNORECASE),
    re.compile(r"(authorization:\s*)\S+(\s+\S+)?", re.IGNORECASE),
)
REDACTED = "[redacted]"
# where uvicorn logs requests (uvicorn.asgi: the ASGI messages, scopes included, at
# trace level) and the websockets library its handshakes
REDACTED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "websockets",
    "websockets.server",
)


def redact(text: str) -> str:
    """`text` with ``token=...`` values and Authorization credentials blanked."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactTokens(logging.Filter):
    """Keeps tokens out of log records (the websockets library logs the request
    line and every header at debug level, before the app sees the request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if redact(text) == text:
            return True
        if isinstance(record.args, tuple) and record.name == "uvicorn.access":
            # the access formatter reads the args: redact them one by one
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        else:
            record.msg, record.args = redact(text), None
        return True


def install_log_redaction() -> None:
    """Add `RedactTokens` to the loggers of uvicorn and websockets, and to the handlers
    they and the root logger write to (records from other loggers pass those)."""
    loggers = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    handlers = [h for lg in [*loggers, logging.getLogger()] for h in lg.handlers]
    for filterer in [*loggers, *handlers]:
        if not any(isinstance(f, RedactTokens) for f in filterer.filters):
            filterer.addFilter(RedactTokens())
