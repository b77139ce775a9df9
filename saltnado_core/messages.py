"""Encodings of Salt events for streaming clients, built once per event.

``/all_events`` sends one websocket text frame per event whose payload is
exactly what the reference sends: ``{"data": {...}, "tag": "..."}`` as JSON
(``ensure_ascii=False``, default separators, keys in that order).

A server-to-client websocket frame is unmasked (RFC 6455 §5.1), so with no
per-connection compression the same frame bytes can go to every subscriber:
:func:`text_frame` builds them once and subscribers' outboxes share the object.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .eventbus import SaltEvent

_OPCODE_TEXT = 0x1
_FIN = 0x80
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


def _json_default(value: Any) -> Any:
    # Event data comes from msgpack: bytes, sets and ext types have no JSON form.
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(obj: Any) -> str:
    """JSON the way salt.utils.json.dumps writes it (std json, ensure_ascii=False)."""
    return json.dumps(obj, ensure_ascii=False, default=_json_default)


def event_json(event: SaltEvent) -> bytes:
    """The reference's all_events / SSE payload for one event, UTF-8 encoded."""
    return dumps({"data": event.data, "tag": event.tag}).encode("utf-8")


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented websocket text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((_FIN | _OPCODE_TEXT, n))
    elif n < 65536:
        header = bytes((_FIN | _OPCODE_TEXT, 126)) + _U16.pack(n)
    else:
        header = bytes((_FIN | _OPCODE_TEXT, 127)) + _U64.pack(n)
    return header + payload


def all_events_frame(event: SaltEvent) -> bytes:
    """The complete websocket frame ``/all_events`` sends for ``event``."""
    return text_frame(event_json(event))
