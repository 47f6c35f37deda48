"""/healthz and /readyz against a real Redis that goes away and comes back."""

from __future__ import annotations

from starlette.testclient import TestClient

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app


def test_health_and_readiness_follow_redis(private_redis: EmbeddedRedis) -> None:
    with TestClient(create_app(Settings(redis_url=private_redis.url))) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "redis": "ok"}

        private_redis.kill()
        health = c.get("/healthz")
        assert health.status_code == 200  # the process itself is fine
        ready = c.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable"
        # it says which Redis (password hidden) and what went wrong
        assert body["redis"].startswith(f"Redis at {private_redis.url} unavailable: ")

        private_redis.start()  # same port: ready again without a restart
        assert c.get("/readyz").status_code == 200
