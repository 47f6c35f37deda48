"""Access control against the real app under uvicorn: every endpoint without a token,
with a wrong, expired, not-yet-valid or forged one, in and out of its scope; a push
header naming a stream outside the write scope; GraphQL listings that show only what
a token may read; RS256 and ES256 public keys; API keys from the environment."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support.live_server import LiveServer
from support.waiting import wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

API_KEY = "k-0123456789abcdef"
SECRET = "s3cret-for-tests-only-0123456789abcdef"
SCOPE = {"read": ["cam:*"], "write": ["cam:1"]}
DEADLINE = 10.0


def mint(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def scoped(streams: dict[str, Any] = SCOPE, **claims: Any) -> str:
    return mint({"streams": streams, "exp": int(time.time()) + 600, **claims})


def _pem(key: Any, path: Path) -> str:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def server(
    redis_server: EmbeddedRedis, rsa_key: rsa.RSAPrivateKey, tmp_path_factory: Any
) -> Iterator[LiveServer]:
    settings = Settings(
        redis_url=redis_server.url,
        api_keys=[API_KEY],
        jwt_secret=SECRET,
        jwt_public_key=_pem(rsa_key, tmp_path_factory.mktemp("keys") / "rsa.pem"),
    )
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        client.xadd("cam:1", {"d": b"one"})
        client.xadd("cam:2", {"d": b"two"})
        client.xadd("payroll", {"d": b"salaries"})
        yield client


# -- every endpoint, every kind of token ---------------------------------------------


def ws_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a websocket handshake (101: accepted)."""
    try:
        with connect(url, additional_headers=headers, open_timeout=DEADLINE):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _with_token(url: str, token: str | None, how: str) -> tuple[str, dict[str, str]]:
    if token is None:
        return url, {}
    if how == "query":
        return url + ("&" if "?" in url else "?") + f"token={token}", {}
    return url, {"Authorization": f"Bearer {token}"}


def call(server: LiveServer, endpoint: str, sid: str, token: str | None, how: str) -> int:
    """Status of `endpoint` on stream `sid` with `token` passed `how` (header/query)."""
    http = server.http_url
    if endpoint in ("pull", "push"):
        url, headers = _with_token(f"{server.ws_url}/data/{sid}/{endpoint}", token, how)
        return ws_status(url, headers)
    if endpoint == "graphql-ws":
        url, headers = _with_token(f"{server.ws_url}/graphql", token, how)
        return ws_status(url, headers)
    if endpoint == "get":
        url, headers = _with_token(f"{http}/data/{sid}", token, how)
        return httpx.get(url, headers=headers).status_code
    if endpoint == "post":
        url, headers = _with_token(f"{http}/data/{sid}", token, how)
        return httpx.post(url, content=b"x", headers=headers).status_code
    if endpoint == "graphql":
        url, headers = _with_token(f"{http}/graphql", token, how)
        return httpx.post(url, json={"query": "{ sids }"}, headers=headers).status_code
    assert endpoint == "index"
    url, headers = _with_token(f"{http}/", token, how)
    return httpx.get(url, headers=headers).status_code


ENDPOINTS = ["get", "post", "pull", "push", "graphql", "graphql-ws", "index"]
BAD_TOKENS: dict[str, Callable[[], str | None]] = {
    "none": lambda: None,
    "wrong": lambda: "not-a-key",
    "expired": lambda: scoped(exp=int(time.time()) - 60),
    "not yet valid": lambda: scoped(nbf=int(time.time()) + 600),
    "forged": lambda: mint({"streams": SCOPE}, key="another-secret-of-32-bytes-or-more"),
    "bad claim": lambda: mint({"streams": {"read": "cam:*"}}),
}


# (no token is the same request either way)
TOKEN_CASES = [(kind, how) for kind in BAD_TOKENS for how in ("header", "query")][1:]


@pytest.mark.parametrize(("kind", "how"), TOKEN_CASES)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_missing_or_bad_token_gets_401(
    server: LiveServer, r: redis.Redis, endpoint: str, kind: str, how: str
) -> None:
    assert call(server, endpoint, "cam:1", BAD_TOKENS[kind](), how) == 401
    assert r.xlen("cam:1") == 1  # nothing was written


def test_401_says_why(server: LiveServer) -> None:
    def error(token: str | None) -> str:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        resp = httpx.get(f"{server.http_url}/data/cam:1", headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
        return resp.json()["error"]

    assert "token is needed" in error(None)
    assert "expired" in error(BAD_TOKENS["expired"]())
    assert "not valid yet" in error(BAD_TOKENS["not yet valid"]())
    assert "signature" in error(BAD_TOKENS["forged"]())
    assert "streams.read must be a list" in error(BAD_TOKENS["bad claim"]())
    assert "not accepted" in error(mint({"streams": SCOPE}, SECRET * 2, "HS512"))
    # an unsigned token is never accepted
    assert "not accepted" in error(mint({"streams": SCOPE}, key=None, algorithm="none"))


def test_a_refused_handshake_says_why(server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.ws_url}/data/cam:1/pull?token={BAD_TOKENS['expired']()}")
    assert info.value.response.status_code == 401
    assert b"expired" in info.value.response.body


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize(
    ("endpoint", "allowed", "refused"),
    [
        ("get", "cam:2", "payroll"),
        ("pull", "cam:2", "payroll"),
        ("post", "cam:1", "cam:2"),  # readable but not writable
        ("push", "cam:1", "cam:2"),
        ("get", "cam:1+cam:2", "cam:1+payroll"),  # every stream of the path counts
        ("push", "cam:1", "cam:1+payroll"),
    ],
)
def test_a_jwt_grants_its_scope_and_nothing_more(
    server: LiveServer, r: redis.Redis, endpoint: str, allowed: str, refused: str, how: str
) -> None:
    token = scoped()
    accepted = 101 if endpoint in ("pull", "push") else 200
    assert call(server, endpoint, allowed, token, how) == accepted
    assert call(server, endpoint, refused, token, how) == 403
    assert r.xlen("cam:2") == 1 and r.xlen("payroll") == 1  # nothing written out of scope


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_api_key_grants_everything(server: LiveServer, r: redis.Redis, endpoint: str) -> None:
    status = call(server, endpoint, "payroll", API_KEY, "header")
    assert status == (101 if endpoint in ("pull", "push", "graphql-ws") else 200)


def test_the_403_names_the_stream(server: LiveServer, r: redis.Redis) -> None:
    resp = httpx.get(f"{server.http_url}/data/payroll", params={"token": scoped()})
    assert resp.status_code == 403
    assert resp.json() == {"error": "token may not read stream 'payroll'"}


def test_a_token_without_streams_claim_reads_nothing(server: LiveServer, r: redis.Redis) -> None:
    token = mint({"sub": "someone"})
    assert call(server, "get", "cam:1", token, "header") == 403
    assert call(server, "graphql", "", token, "header") == 200  # the endpoint itself is open
    assert gql(server, "{ sids }", token) == {"data": {"sids": []}}


def test_health_checks_need_no_token(server: LiveServer) -> None:
    for path in ("/healthz", "/readyz"):
        assert httpx.get(server.http_url + path).status_code == 200


def test_metrics_need_a_token_that_may_read_every_stream(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("payroll", {"d": b"x"})
    plain_redis.xgroup_create("payroll", "auditors", id="0")

    def scrape(token: str | None) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{server.http_url}/metrics", headers=headers)

    assert scrape(None).status_code == 401
    refused = scrape(scoped())  # would name 'payroll' in a label
    assert refused.status_code == 403 and "payroll" not in refused.text
    assert 'stream="payroll"' in scrape(API_KEY).text
    assert 'stream="payroll"' in scrape(scoped({"read": ["*"], "write": []})).text


def test_rs256_tokens_from_the_public_key(
    server: LiveServer, r: redis.Redis, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = mint({"streams": SCOPE}, key=rsa_key, algorithm="RS256")
    assert call(server, "get", "cam:1", token, "header") == 200
    assert call(server, "get", "payroll", token, "header") == 403
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert call(server, "get", "cam:1", mint({"streams": SCOPE}, other, "RS256"), "header") == 401


def test_es256_public_key_and_api_keys_from_the_environment(
    redis_url: str, tmp_path: Path, r: redis.Redis
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    env = {
        "REDIS_URL": redis_url,
        "FASTREDIS_API_KEYS": "first, second",
        "FASTREDIS_JWT_PUBLIC_KEY": _pem(key, tmp_path / "ec.pem"),
    }
    with LiveServer(create_app(Settings.from_env(env))) as live:
        assert call(live, "get", "cam:1", mint({"streams": SCOPE}, key, "ES256"), "query") == 200
        assert call(live, "get", "cam:1", "second", "header") == 200
        assert call(live, "get", "cam:1", scoped(), "header") == 401  # no HS256 secret here


def test_a_bad_public_key_file_fails_at_startup(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError, match="cannot load the JWT public key"):
        create_app(Settings(jwt_public_key=str(tmp_path / "bad.pem")))


def test_secrets_are_not_in_the_settings_repr() -> None:
    text = repr(Settings(api_keys=[API_KEY], jwt_secret=SECRET))
    assert API_KEY not in text and SECRET not in text


# -- push: the header's streams --------------------------------------------------------


def test_a_header_entry_outside_the_write_scope_refuses_the_whole_message(
    server: LiveServer, r: redis.Redis
) -> None:
    token = scoped({"read": [], "write": ["cam:*"]})
    with connect(f"{server.ws_url}/data/cam:1/push?ack=1&token={token}") as ws:
        ws.send(json.dumps([["cam:1", 3], ["cam:2", 6]]))
        ws.send(b"abcdef")
        assert len(json.loads(ws.recv(DEADLINE))) == 2  # both in scope: written
        ws.send(json.dumps([["cam:1", 3], ["payroll", 6]]))
        ws.send(b"abcdef")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(DEADLINE)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert "payroll" in info.value.rcvd.reason and "nothing" in info.value.rcvd.reason
    assert r.xlen("cam:1") == 2 and r.xlen("cam:2") == 2 and r.xlen("payroll") == 1


# -- GraphQL: scopes -------------------------------------------------------------------


def gql(server: LiveServer, query: str, token: str) -> Any:
    resp = httpx.post(
        f"{server.http_url}/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_graphql_lists_only_what_the_token_may_read(server: LiveServer, r: redis.Redis) -> None:
    token = scoped()
    assert gql(server, "{ sids }", token)["data"] == {"sids": ["cam:1", "cam:2"]}
    streams = gql(server, "{ streams { sid length } }", token)["data"]["streams"]
    assert [s["sid"] for s in streams] == ["cam:1", "cam:2"]
    assert gql(server, "{ sids }", API_KEY)["data"] == {"sids": ["cam:1", "cam:2", "payroll"]}


def test_graphql_does_not_tell_whether_a_stream_out_of_scope_exists(
    server: LiveServer, r: redis.Redis
) -> None:
    token = scoped()
    answers = [
        gql(server, f'{{ streams(sids: ["{sid}"]) {{ sid length error }} }}', token)
        for sid in ("payroll", "no-such-stream")
    ]
    messages = [a["errors"][0]["message"] for a in answers]
    assert messages == [
        "token may not read stream 'payroll'",
        "token may not read stream 'no-such-stream'",
    ]
    assert all(a["data"] is None for a in answers)


def test_graphql_stream_meta_needs_the_write_scope(server: LiveServer, r: redis.Redis) -> None:
    token = scoped()
    answer = gql(server, 'mutation { streamMeta(sid: "cam:2", meta: {a: 1}) }', token)
    assert answer["errors"][0]["message"] == "token may not write stream 'cam:2'"
    assert r.get("XMETA:cam:2") is None
    answer = gql(server, 'mutation { streamMeta(sid: "cam:1", meta: {a: 1}) }', token)
    assert answer["data"] == {"streamMeta": {"a": 1}}


def test_graphql_subscription_needs_the_read_scope(server: LiveServer, r: redis.Redis) -> None:
    token = scoped()
    with connect(
        f"{server.ws_url}/graphql?token={token}", subprotocols=["graphql-transport-ws"]
    ) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(DEADLINE))["type"] == "connection_ack"
        query = 'subscription { data(sids: ["cam:1", "payroll"]) { sid } }'
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        reply = json.loads(ws.recv(DEADLINE))
    assert reply["type"] == "next" and reply["payload"]["data"] is None
    assert reply["payload"]["errors"][0]["message"] == "token may not read stream 'payroll'"


def test_a_token_used_again_after_its_exp_is_refused(server: LiveServer, r: redis.Redis) -> None:
    """Verified tokens are remembered (a REST client repeats its token), until exp."""
    token = scoped(exp=int(time.time()) + 2)
    assert call(server, "get", "cam:1", token, "header") == 200
    assert call(server, "get", "cam:1", token, "header") == 200  # remembered
    wait_until(lambda: call(server, "get", "cam:1", token, "header") == 401, 10, what="exp")


def test_refused_graphql_requests_do_not_fill_the_log(
    server: LiveServer, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="strawberry.execution"):
        for _ in range(3):
            answer = gql(server, '{ streams(sids: ["payroll"]) { sid } }', scoped())
            assert answer["errors"][0]["message"] == "token may not read stream 'payroll'"
        assert gql(server, "{ nosuchfield }", scoped())["errors"]  # a broken query is logged
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "strawberry.execution"]
    assert logged and not any("payroll" in text for text in logged)
