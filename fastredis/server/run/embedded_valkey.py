"""The embedded Valkey of `fastredis serve` (and of `create_app` without a Redis URL).

With access control on (an API key or a JWT option), it requires a random password: any
local process could otherwise read and write the protected streams on its port. The
password never leaves this process: it is on no command line, and shown URLs hide it.
"""

from __future__ import annotations

import secrets

from fastredis.embedded import EmbeddedRedis
from fastredis.server.run.settings import Settings

__all__ = ["embedded_valkey"]


def embedded_valkey(
    settings: Settings, port: int | None = None, data_dir: str | None = None
) -> EmbeddedRedis:
    """The embedded Valkey for `settings` (not started yet): with a password when access
    control is on."""
    password = secrets.token_urlsafe(32) if settings.access_control else None
    return EmbeddedRedis(port=port, data_dir=data_dir, password=password)
