"""Salt master event-bus wire codec.

Subscriber side (``<sock_dir>/master_event_pub.ipc``, Salt 3008): a plain
msgpack stream of maps ``{"head": {}, "body": <bytes>}`` with no length prefix.
``body`` is ``<tag utf-8> + b"\\n\\n" + msgpack(data)`` (Salt's ``TAGEND``).

Publisher side (``master_event_pull.ipc``): each message is a 4-byte big-endian
length followed by the same msgpack map; without the prefix the master drops it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

TAGEND = b"\n\n"
_LENGTH = struct.Struct(">I")


class EventBusError(Exception):
    """The byte stream is not a Salt event stream. The decoder cannot resync
    after this: the binding drops the connection and reconnects."""


@dataclass(frozen=True, slots=True)
class SaltEvent:
    tag: str
    data: Any
    # the undecoded ``body``, kept for diagnostics; not part of equality
    raw: bytes = field(default=b"", compare=False, repr=False)


class EventBusDecoder:
    """Turns bytes read from the publisher socket into :class:`SaltEvent` objects.

    ``feed(data)`` accepts any split of the stream (one byte at a time included);
    ``events()`` yields every complete event buffered so far. Malformed input
    raises :class:`EventBusError` from ``events()``; an incomplete message waits
    for more bytes but never more than ``max_event_bytes`` of them.
    """

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        # surrogateescape: a legacy str-typed body carries raw msgpack bytes that
        # need not be UTF-8; decode_body turns it back into those exact bytes.
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=False,
            max_buffer_size=max_event_bytes,
            unicode_errors="surrogateescape",
        )
        # msgpack bounds only its *unconsumed* buffer; a message whose prefix is
        # parsed incrementally (a long head array) slips past that, so the size
        # of the current message is counted here: bytes fed minus its start.
        self._max = max_event_bytes
        self._fed = 0
        self._start = 0
        self._failed: str | None = None

    def feed(self, data: bytes) -> None:
        if self._failed:
            raise EventBusError(self._failed)
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            self._fail("an event-bus message exceeds the size limit")
        self._fed += len(data)

    def events(self) -> Iterator[SaltEvent]:
        if self._failed:
            raise EventBusError(self._failed)
        while True:
            try:
                message = next(self._unpacker)
            except StopIteration:
                if self._fed - self._start > self._max:
                    self._fail("an event-bus message exceeds the size limit")
                return
            except Exception as exc:  # msgpack raises several unrelated types
                self._fail(f"malformed event-bus stream: {type(exc).__name__}: {exc}")
            end = self._unpacker.tell()
            size, self._start = end - self._start, end
            if size > self._max:
                self._fail("an event-bus message exceeds the size limit")
            try:
                event = decode_message(message)
            except EventBusError as exc:  # no resync after a bad message either
                self._fail(str(exc))
            yield event

    def _fail(self, reason: str) -> None:
        self._failed = reason
        raise EventBusError(reason)


def decode_message(message: Any) -> SaltEvent:
    """Decode one unpacked ``{"head", "body"}`` map into a :class:`SaltEvent`."""
    if not isinstance(message, Mapping) or "body" not in message:
        raise EventBusError(f"event-bus message is not a {{head, body}} map: {message!r:.80}")
    return decode_body(message["body"])


def decode_body(body: Any) -> SaltEvent:
    """Split ``<tag>\\n\\n<msgpack data>`` as Salt's ``SaltEvent.unpack`` does."""
    if isinstance(body, str):  # older publishers sent str bodies
        body = body.encode("utf-8", "surrogateescape")
    if not isinstance(body, (bytes, bytearray)):
        raise EventBusError(f"event body is {type(body).__name__}, not bytes")
    tag, sep, packed = bytes(body).partition(TAGEND)
    if not sep:
        raise EventBusError("event body has no tag separator")
    try:
        data = msgpack.unpackb(packed, raw=False, strict_map_key=False) if packed else {}
    except Exception as exc:
        raise EventBusError(f"event data is not msgpack: {type(exc).__name__}") from None
    return SaltEvent(tag.decode("utf-8", "replace"), data, bytes(body))


def encode_body(tag: str, data: Any) -> bytes:
    return tag.encode("utf-8") + TAGEND + msgpack.packb(data, use_bin_type=True)


def encode_pub_message(tag: str, data: Any) -> bytes:
    """One message as the publisher socket carries it (for tests and tools)."""
    return msgpack.packb({"head": {}, "body": encode_body(tag, data)}, use_bin_type=True)


def encode_pull_message(tag: str, data: Any) -> bytes:
    """One length-prefixed message for ``master_event_pull.ipc`` (fires an event)."""
    payload = encode_pub_message(tag, data)
    return _LENGTH.pack(len(payload)) + payload
