"""What a source emits per read, by its ``batch`` argument: the one place that knows
the batch modes, shared by the stream and consumer-group sources.

* ``False``: one Message per entry (the sources emit those themselves);
* ``True``: the read's StreamBatch itself;
* ``"messages"``: a list of Messages;
* ``"arrow"``: a ``pyarrow.RecordBatch`` (see fastredis.columnar): payload columns
  viewing the reply buffer, no payload copied; the record batch keeps the reply
  alive. Entries a group replays or claims (already made into Messages) are copied
  into a record batch with the same columns.

A consumer group acknowledges a whole emitted batch once streamz's reference count
of it is released, whatever its mode.
"""

from __future__ import annotations

from typing import Any

from fastredis.streamz.message import Message

WHOLE = (True, "arrow")  # modes that emit a read's StreamBatch as one item


def read_item(mode: Any, batch: Any) -> Any:
    """What mode True or "arrow" emits for a read's StreamBatch."""
    if mode == "arrow":
        from fastredis.columnar import to_arrow

        return to_arrow(batch)
    return batch


def messages_item(mode: Any, msgs: list[Message], encoding: str | None) -> Any:
    """What a list-emitting mode emits for Messages made already (replays, claims)."""
    if mode == "arrow":
        from fastredis.columnar import messages_to_arrow

        return messages_to_arrow(msgs, text=encoding is not None)
    return msgs
