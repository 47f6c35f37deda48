"""Every code example of README.md and the docs site runs, as written, against real
servers (see tests/support/doc_examples.py for how blocks are found and pointed at them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from support.doc_examples import JWT_SECRET, OUTPUT, ROOT, RUN, Example, all_examples, pointed_at
from support.live_server import LiveServer, server_fixture  # noqa: F401
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedCluster, EmbeddedRedis

EXAMPLES = all_examples()
RUNNABLE = [e for e in EXAMPLES if e.lang in RUN and not e.not_run]
TIMEOUT = 240  # seconds per example: the Dask one starts a cluster of processes


@pytest.fixture(scope="module")
def jwt_server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    """The app with access control, as `fastredis serve --jwt-secret ...` runs it."""
    from fastredis.server import Settings, create_app

    app = create_app(Settings(redis_url=redis_server.url, jwt_secret=JWT_SECRET))
    with LiveServer(app) as live:
        yield live


class Pages:
    """Redis is emptied when the examples move on to another page (and only then:
    a page's examples run in order, each building on the one before)."""

    def __init__(self) -> None:
        self.current: Path | None = None

    def enter(self, page: Path, clients: list[redis.Redis | redis.RedisCluster]) -> None:
        if page == self.current:
            return
        self.current = page
        for client in clients:
            if isinstance(client, redis.RedisCluster):
                client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
            else:
                client.flushall()


_pages = Pages()


def _addresses(e: Example, request: pytest.FixtureRequest) -> dict[str, str]:
    """The documented addresses and the fixtures' real ones. Servers that no example of
    the page names are not started."""
    page = "\n".join(x.source for x in EXAMPLES if x.path == e.path)
    redis_server: EmbeddedRedis = request.getfixturevalue("redis_server")
    server: LiveServer = request.getfixturevalue("server")
    redis_base = redis_server.url.rsplit("/", 1)[0]  # the docs add the /db themselves
    found = {
        "localhost:8000": f"{server.host}:{server.port}",
        "redis://localhost:6379": redis_base,
        "redis://localhost:6380": redis_base,  # the first steps' `serve --embedded-port`
    }
    clients: list[redis.Redis | redis.RedisCluster] = [redis.Redis.from_url(redis_server.url)]
    if "localhost:8001" in page:
        jwt: LiveServer = request.getfixturevalue("jwt_server")
        found["localhost:8001"] = f"{jwt.host}:{jwt.port}"
    if "redis://node-1:7000" in page:
        cluster: EmbeddedCluster = request.getfixturevalue("redis_cluster")
        found["redis://node-1:7000"] = cluster.url
        clients.append(redis.RedisCluster.from_url(cluster.url))
    _pages.enter(e.path, clients)
    for client in clients:
        client.close()
    return found


def _environment(server: str) -> dict[str, str]:
    """The user's environment, with the CLI's default server (ws://localhost:8000) the
    fixture's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTREDIS_")}
    env["FASTREDIS_URL"] = f"ws://{server}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(argv: list[str], cwd: Path, example: Example, server: str) -> None:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=_environment(server),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, (
        f"{example.name} exited with {done.returncode}\n--- stdout\n{done.stdout[-4000:]}"
        f"\n--- stderr\n{done.stderr[-4000:]}"
    )


@pytest.mark.parametrize("e", RUNNABLE, ids=[e.name for e in RUNNABLE])
def test_example_runs(e: Example, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    addresses = _addresses(e, request)
    source = pointed_at(e.source, addresses)
    if e.lang == "python":
        script = tmp_path / "example.py"
        script.write_text(source, encoding="utf-8")
        _run([sys.executable, str(script)], tmp_path, e, addresses["localhost:8000"])
    elif e.lang == "bash":
        script = tmp_path / "example.sh"
        script.write_text(source, encoding="utf-8")
        _run(["bash", "-eo", "pipefail", str(script)], tmp_path, e, addresses["localhost:8000"])
    elif source.lstrip().startswith("subscription"):
        assert _first_subscription_result(addresses["localhost:8000"], source), e.name
    else:  # a query or mutation, as the playground or any GraphQL client sends it
        http = "http://" + addresses["localhost:8000"]
        answer = httpx.post(f"{http}/graphql", json={"query": source}, timeout=30).json()
        assert "errors" not in answer, f"{e.name}: {answer['errors']}"
        assert answer["data"], e.name


def _first_subscription_result(server: str, query: str) -> dict[str, Any]:
    """Subscribe over graphql-transport-ws; the data of the first result."""
    url = f"ws://{server}/graphql"
    with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        while True:
            message = json.loads(ws.recv(timeout=30))
            if message["type"] == "ping":
                ws.send(json.dumps({"type": "pong"}))
            elif message["type"] != "pong":
                break
    assert message["type"] == "next" and "errors" not in message["payload"], message
    data: dict[str, Any] = message["payload"]["data"]
    return data


def test_every_block_is_run_or_says_why_not() -> None:
    unchecked = [e.name for e in EXAMPLES if e.lang not in RUN | OUTPUT and not e.not_run]
    assert not unchecked, f"blocks neither run nor marked '# not run: why': {unchecked}"
