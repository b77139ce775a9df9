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
import math
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
    """JSON the way salt.utils.json.dumps writes it (std json, ensure_ascii=False),
    but always valid JSON (RFC 8259 §6: "Numeric values that cannot be represented
    ... (such as Infinity and NaN) are not permitted"): a NaN or infinite float is
    written ``null``, as JavaScript's ``JSON.stringify`` does, and as a key
    ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``. The reference writes bare
    ``NaN``, which ``JSON.parse`` rejects, losing the whole message.

    Never raises for data decoded from the event bus: msgpack maps may have keys
    JSON cannot hold (bytes, ext types, timestamps), and nesting deep enough to
    exhaust the encoder's recursion limit; such data is written by
    :func:`_jsonable`'s rules instead (keys as strings, nesting past
    ``MAX_JSON_DEPTH`` as a marker string).
    """
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, default=_json_default)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(_jsonable(obj, MAX_JSON_DEPTH), ensure_ascii=False, allow_nan=False, default=_json_default)


MAX_JSON_DEPTH = 100  # levels kept when data has to be rewritten (see dumps)
TOO_DEEP = "<nested too deeply>"


def _jsonable(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        if depth <= 0:
            return TOO_DEEP
        return {_json_key(k): _jsonable(v, depth - 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        if depth <= 0:
            return TOO_DEEP
        return [_jsonable(v, depth - 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return repr(key).replace("inf", "Infinity").replace("nan", "NaN")  # json's own spelling
    if key is None or isinstance(key, (str, int, float)):  # bool is an int
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", "replace")
    return str(key)


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


def http_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (RFC 9112 §7.1), as h11 frames it."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def unchunk(chunks: bytes) -> bytes:
    """The data of whole HTTP chunks (as :func:`http_chunk` writes them), joined:
    an HTTP/1.0 client's event stream is sent unchunked (RFC 9112 §6.3)."""
    data = []
    start, end = 0, len(chunks)
    while start < end:
        size_end = chunks.index(b"\r\n", start)
        begin = size_end + 2
        stop = begin + int(chunks[start:size_end], 16)
        data.append(chunks[begin:stop])
        start = stop + 2  # the CRLF after the chunk's data
    return b"".join(data)


def sse_chunk(tag: str, payload: bytes) -> bytes:
    """One ``/events`` event as the reference writes it — ``tag:`` and ``data:``
    lines and a blank line — already framed as an HTTP chunk. ``payload`` is
    :func:`event_json` (shared with the websocket frame)."""
    tag_line = tag.replace("\n", " ").replace("\r", " ").encode("utf-8")
    return http_chunk(b"tag: " + tag_line + b"\ndata: " + payload + b"\n\n")


def sse_chunk_with_id(event_id: str, tag: str, payload: bytes, master: str | None = None) -> bytes:
    """:func:`sse_chunk` with an ``id:`` line first (``/events?ids=1``): the
    browser's ``EventSource`` sends the last one back as ``Last-Event-ID`` when it
    reconnects. ``event_id`` is the server's own (letters, digits and a dash);
    ``master`` (an event log's), when given, is the data's first key."""
    if master is not None:
        payload = with_master(master, payload)
    tag_line = tag.replace("\n", " ").replace("\r", " ").encode("utf-8")
    return http_chunk(b"id: " + event_id.encode("ascii") + b"\ntag: " + tag_line + b"\ndata: " + payload + b"\n\n")


def with_id(event_id: str, payload: bytes, master: str | None = None) -> bytes:
    """The ``/all_events?ids=1`` envelope, ``{"id": "<id>", "data": …, "tag": …}``,
    made from :func:`event_json`'s bytes without decoding them: the id is put
    before the object's first key. With an event log, ``"master"`` follows the id."""
    assert payload[:1] == b"{"
    if master is not None:
        payload = with_master(master, payload)
    return b'{"id": "' + event_id.encode("ascii") + b'", ' + payload[1:]


def with_master(master: str, payload: bytes) -> bytes:
    """:func:`event_json`'s bytes with ``"master": <master>`` as the first key."""
    return b'{"master": ' + dumps(master).encode("utf-8") + b", " + payload[1:]


SSE_PREAMBLE = b"retry: 400\n"  # first bytes of every /events stream, as the reference
SSE_KEEPALIVE = http_chunk(b": keep-alive\n\n")  # a comment; EventSource ignores it
SSE_KEEPALIVE_INTERVAL = 15.0  # seconds between keep-alive comments on /events
