"""What ``/foxglove`` sends and accepts in ``foxglove.websocket.v1`` (the Foxglove WebSocket
protocol): the JSON server messages, binary Message Data frames, the client messages
it checks, and how a stream becomes a channel.

* A stream whose metadata (``XMETA:{sid}``) names an ``encoding`` (and ``schemaName``,
  ``schema``, ``schemaEncoding``) is a channel of that encoding: its payloads go out
  unchanged.
* Otherwise a stream whose newest entry is a JPEG or PNG is a ``foxglove.CompressedImage``
  channel (protobuf): each JPEG/PNG entry is wrapped in one, other entries are skipped.
* Otherwise its payloads go out unchanged as schemaless ``json``.
* A message's time is its entry id: ``ms * 1e6 + seq`` nanoseconds (``seq`` capped at
  999,999, so entries of one millisecond keep their order).
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastredis.server.edge.protocol import CLOSE_INVALID_DATA, BadInput

__all__ = [
    "IMAGE_SCHEMA",
    "SUBPROTOCOL",
    "Channel",
    "channel_for",
    "compressed_image",
    "image_format",
    "message_data",
    "parse_client_message",
    "stamp_ns",
]

SUBPROTOCOL = "foxglove.websocket.v1"
IMAGE_SCHEMA = "foxglove.CompressedImage"
MAX_CLIENT_MESSAGE = 64 * 1024  # a subscribe of thousands of channels fits
MAX_SUBSCRIPTION_ID = 2**32 - 1
# ops of the protocol this server does not offer (no capability advertised for them)
UNOFFERED_OPS = frozenset(
    {
        "advertise", "unadvertise", "getParameters", "setParameters",
        "subscribeParameterUpdates", "unsubscribeParameterUpdates",
        "subscribeConnectionGraph", "unsubscribeConnectionGraph", "fetchAsset",
    }
)  # fmt: skip
_MESSAGE_DATA = struct.Struct("<BIQ")  # opcode 1, subscription id, time (ns)


@dataclass(frozen=True)
class Channel:
    """How one stream is advertised."""

    sid: str
    encoding: str
    schema_name: str = ""
    schema: str = ""
    schema_encoding: str | None = None

    @property
    def images(self) -> bool:
        return self.schema_name == IMAGE_SCHEMA and self.encoding == "protobuf"

    def advertised(self, channel_id: int) -> dict[str, Any]:
        out = {
            "id": channel_id,
            "topic": self.sid,
            "encoding": self.encoding,
            "schemaName": self.schema_name,
            "schema": self.schema,
        }
        if self.schema_encoding:
            out["schemaEncoding"] = self.schema_encoding
        return out


@cache
def _image_schema() -> str:
    """foxglove.CompressedImage as a base64 FileDescriptorSet (the file and its imports)."""
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from google.protobuf.descriptor_pb2 import FileDescriptorSet  # type: ignore[import-untyped]

    files: list[Any] = []

    def add(file: Any) -> None:
        if any(f.name == file.name for f in files):
            return
        for dep in file.dependencies:
            add(dep)
        files.append(file)

    add(CompressedImage.DESCRIPTOR.file)
    descriptor_set = FileDescriptorSet()
    for file in files:
        file.CopyToProto(descriptor_set.file.add())
    return base64.b64encode(descriptor_set.SerializeToString()).decode()


def image_format(head: bytes) -> str | None:
    """ "jpeg" or "png" from a payload's first bytes, else None."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def _text_field(meta: dict[str, Any], name: str) -> str | None:
    value = meta.get(name)
    return value if isinstance(value, str) else None


def channel_for(sid: str, meta: Any, head: bytes | None) -> Channel | None:
    """The channel of stream `sid` from its metadata (JSON, or None) and its newest
    payload's first bytes (`head`; None: the stream is empty); None: not yet known
    (an empty stream without metadata is advertised once it has an entry)."""
    if isinstance(meta, dict) and _text_field(meta, "encoding"):
        return Channel(
            sid,
            str(meta["encoding"]),
            _text_field(meta, "schemaName") or "",
            _text_field(meta, "schema") or "",
            _text_field(meta, "schemaEncoding"),
        )
    if head is None:
        return None
    if image_format(head) is not None:
        return Channel(sid, "protobuf", IMAGE_SCHEMA, _image_schema())
    return Channel(sid, "json")


def stamp_ns(ms: int, seq: int) -> int:
    return ms * 1_000_000 + min(seq, 999_999)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field's tag and length (its bytes follow)."""
    return _varint(number << 3 | 2) + _varint(len(data))


def compressed_image(sid: str, stamp: int, fmt: str, data: Any) -> list[Any]:
    """A foxglove.CompressedImage message as parts to join (the image is not copied
    here): timestamp (1), data (2), format (3), frame_id (4)."""
    seconds, nanos = divmod(stamp, 1_000_000_000)
    timestamp = (b"\x08" + _varint(seconds) if seconds else b"") + (
        b"\x10" + _varint(nanos) if nanos else b""
    )
    frame_id, form = sid.encode(), fmt.encode()
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    return [
        _field(1, timestamp) + timestamp,
        _varint(2 << 3 | 2) + _varint(size),
        data,
        _field(3, form) + form + _field(4, frame_id) + frame_id,
    ]


def message_data(subscription: int, stamp: int, parts: list[Any]) -> bytes:
    """A binary Message Data frame: opcode 0x01, subscription id, time, payload."""
    return b"".join([_MESSAGE_DATA.pack(1, subscription, stamp), *parts])


def _bad(reason: str) -> BadInput:
    return BadInput(reason, CLOSE_INVALID_DATA)


def _ids(value: Any, what: str) -> list[int]:
    if not isinstance(value, list):
        raise _bad(f"{what} must be an array of numbers")
    for item in value:
        if type(item) is not int or not 0 <= item <= MAX_SUBSCRIPTION_ID:
            raise _bad(f"{what} holds {item!r}: ids are integers in [0, 2**32)")
    return value


def parse_client_message(text: str) -> tuple[str, Any]:
    """(op, its argument) of a client's JSON message: ("subscribe", [(id, channelId)]),
    ("unsubscribe", [id]), or (an op this server does not offer, None); anything else
    raises BadInput (close 1007) naming what is wrong."""
    if len(text) > MAX_CLIENT_MESSAGE:
        raise BadInput(f"client message over {MAX_CLIENT_MESSAGE} bytes", 1009)
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise _bad(f"client message is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise _bad('client message must be a JSON object with a string "op"')
    op = message["op"]
    if op == "subscribe":
        subs = message.get("subscriptions")
        if not isinstance(subs, list) or not all(isinstance(s, dict) for s in subs):
            raise _bad('subscribe needs "subscriptions": [{"id", "channelId"}, ...]')
        ids = _ids([s.get("id") for s in subs], "subscriptions[].id")
        channels = _ids([s.get("channelId") for s in subs], "subscriptions[].channelId")
        return op, list(zip(ids, channels, strict=True))
    if op == "unsubscribe":
        return op, _ids(message.get("subscriptionIds"), "subscriptionIds")
    if op in UNOFFERED_OPS:
        return op, None
    raise _bad(f"unknown op {op!r} (this server takes subscribe and unsubscribe)")
