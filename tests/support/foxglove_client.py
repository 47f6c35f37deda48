"""A Foxglove WebSocket protocol (foxglove.websocket.v1) client written from the spec,
over the `websockets` library, for the tests and the benchmark (not a test module)."""

from __future__ import annotations

import json
import struct
from typing import Any

from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

SUBPROTOCOL = "foxglove.websocket.v1"


class FoxgloveClient:
    """Connects, keeps the channels advertised so far, and reads messages."""

    def __init__(self, url: str, **options: Any) -> None:
        self._connection = connect(
            url, subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=None, open_timeout=20, **options
        )
        self.ws: ClientConnection = self._connection.__enter__()
        self.channels: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.unadvertised: list[int] = []
        self.server_info = self.next_json()
        assert self.server_info["op"] == "serverInfo", self.server_info

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def __enter__(self) -> FoxgloveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_json(self, timeout: float = 20) -> dict[str, Any]:
        message = self.ws.recv(timeout)
        assert isinstance(message, str), "expected a JSON message"
        return json.loads(message)

    def _take(self, message: str | bytes) -> tuple[int, int, bytes] | None:
        if isinstance(message, bytes):
            opcode, sub_id, stamp = struct.unpack_from("<BIQ", message)
            assert opcode == 1, f"opcode {opcode}"
            return sub_id, stamp, message[13:]
        data = json.loads(message)
        if data["op"] == "advertise":
            for channel in data["channels"]:
                self.channels[channel["id"]] = channel
        elif data["op"] == "unadvertise":
            for cid in data["channelIds"]:
                self.channels.pop(cid, None)
                self.unadvertised.append(cid)
        elif data["op"] == "status":
            self.statuses.append(data)
        return None

    def pump(self, timeout: float = 20) -> tuple[int, int, bytes] | None:
        """Handle one message: JSON updates the state (None), binary is returned."""
        return self._take(self.ws.recv(timeout))

    def channel(self, topic: str, timeout: float = 20) -> dict[str, Any]:
        """The channel advertised for `topic`, waiting for it."""
        while True:
            for channel in self.channels.values():
                if channel["topic"] == topic:
                    return channel
            self.pump(timeout)

    def subscribe(self, sub_id: int, channel_id: int) -> None:
        self.send({"op": "subscribe", "subscriptions": [{"id": sub_id, "channelId": channel_id}]})

    def unsubscribe(self, sub_id: int) -> None:
        self.send({"op": "unsubscribe", "subscriptionIds": [sub_id]})

    def send(self, message: Any) -> None:
        self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def message(self, timeout: float = 20) -> tuple[int, int, bytes]:
        """The next Message Data frame: (subscription id, time in ns, payload)."""
        while True:
            got = self.pump(timeout)
            if got is not None:
                return got
