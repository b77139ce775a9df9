"""Salt master event-bus wire codec.

Subscriber side (``<sock_dir>/master_event_pub.ipc``, Salt 3008): a plain
msgpack stream of maps ``{"head": {}, "body": <bytes>}`` with no length prefix.
``body`` is ``<tag utf-8> + b"\\n\\n" + msgpack(data)`` (Salt's ``TAGEND``).

Publisher side (``master_event_pull.ipc``): each message is a 4-byte big-endian
length followed by the same msgpack map; without the prefix the master drops it.

Two kinds of bad input, handled differently. The *framing* — the msgpack stream
of ``{"head", "body"}`` maps — broken, or a message over the size limit: the
decoder cannot tell where the next message starts, so it fails for good and the
binding reconnects. A *body* that does not decode inside intact framing (any API
user can fire a tag holding ``"\\n\\n"``, any minion a string that is not
UTF-8): the decoder knows where the next message starts, so it yields an
:class:`UndecodableEvent` saying why, and goes on. The reference does the same:
Salt's ``SaltEvent.unpack`` raises for that one event only.
"""

from __future__ import annotations

import enum
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


class BodyFault(str, enum.Enum):
    """Why one event's body does not decode (the value is the log's wording)."""

    NOT_BYTES = "the body is not bytes"
    NO_TAG_END = "the body has no tag separator"
    # Salt splits at the first "\n\n" (its TAGEND), so a tag holding one leaves
    # the rest of the tag in front of the data.
    TRAILING = "bytes follow the data (a tag holding \\n\\n?)"
    TRUNCATED = "the data is cut short"
    NOT_UTF8 = "a string that is not UTF-8 (invalid bytes or a surrogate)"
    TOO_DEEP = "the data is nested past msgpack's depth limit"
    BAD_KEY = "a map key that is an array or a map"
    NOT_MSGPACK = "the data is not msgpack"


class UndecodableBody(EventBusError):
    """One event's body does not decode; the framing around it is intact."""

    def __init__(self, fault: BodyFault, tag: str = "") -> None:
        super().__init__(f"undecodable event body: {fault.value}")
        self.fault = fault
        self.tag = tag


@dataclass(frozen=True, slots=True)
class SaltEvent:
    tag: str
    data: Any
    # the undecoded ``body``, kept for diagnostics; not part of equality
    raw: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UndecodableEvent:
    """A message whose body did not decode, skipped: ``fault`` says why, ``tag``
    is the part before the separator (empty if there is none), ``size`` the
    message's bytes on the wire."""

    fault: BodyFault
    tag: str
    size: int


class EventBusDecoder:
    """Turns bytes read from the publisher socket into :class:`SaltEvent` objects.

    ``feed(data)`` accepts any split of the stream (one byte at a time included);
    ``events()`` yields every complete message buffered so far: a
    :class:`SaltEvent`, or an :class:`UndecodableEvent` for a message whose body
    does not decode (the next one is decoded as usual). Broken framing raises
    :class:`EventBusError` from ``events()``, and so does every later call; an
    incomplete message waits for more bytes but never more than
    ``max_event_bytes`` of them.
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

    def events(self) -> Iterator[SaltEvent | UndecodableEvent]:
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
            event: SaltEvent | UndecodableEvent
            try:
                event = decode_message(message)
            except UndecodableBody as exc:  # the framing is intact: skip just this one
                event = UndecodableEvent(exc.fault, exc.tag, size)
            except EventBusError as exc:  # not a message: no resync
                self._fail(str(exc))
            yield event

    def _fail(self, reason: str) -> None:
        self._failed = reason
        raise EventBusError(reason)


def decode_message(message: Any) -> SaltEvent:
    """Decode one unpacked ``{"head", "body"}`` map into a :class:`SaltEvent`.

    Raises :class:`EventBusError` if ``message`` is not such a map (broken
    framing), :class:`UndecodableBody` if its body does not decode."""
    if not isinstance(message, Mapping) or "body" not in message:
        raise EventBusError(f"event-bus message is not a {{head, body}} map: {message!r:.80}")
    return decode_body(message["body"])


def decode_body(body: Any) -> SaltEvent:
    """Split ``<tag>\\n\\n<msgpack data>`` as Salt's ``SaltEvent.unpack`` does.

    Raises :class:`UndecodableBody` (with the :class:`BodyFault`) if it does not decode."""
    if isinstance(body, str):  # older publishers sent str bodies
        body = body.encode("utf-8", "surrogateescape")
    if not isinstance(body, (bytes, bytearray)):
        raise UndecodableBody(BodyFault.NOT_BYTES)
    raw_tag, sep, packed = bytes(body).partition(TAGEND)
    if not sep:
        raise UndecodableBody(BodyFault.NO_TAG_END)
    tag = raw_tag.decode("utf-8", "replace")
    try:
        data = msgpack.unpackb(packed, raw=False, strict_map_key=False) if packed else {}
    except Exception as exc:  # msgpack raises several unrelated types
        raise UndecodableBody(_fault(exc, packed), tag) from None
    return SaltEvent(tag, data, bytes(body))


# msgpack's errors for data it cannot decode, most specific first (ExtraData,
# StackError and UnicodeDecodeError are ValueErrors; TypeError is an unhashable key)
_FAULTS: tuple[tuple[type[Exception], BodyFault], ...] = (
    (msgpack.ExtraData, BodyFault.TRAILING),
    (msgpack.StackError, BodyFault.TOO_DEEP),
    (UnicodeDecodeError, BodyFault.NOT_UTF8),
    (TypeError, BodyFault.BAD_KEY),
    (msgpack.FormatError, BodyFault.NOT_MSGPACK),
)


def _fault(exc: Exception, packed: bytes) -> BodyFault:
    for kind, fault in _FAULTS:
        if isinstance(exc, kind):
            return fault
    # unpackb says "incomplete input" only in its message; a streaming unpacker
    # fed the same bytes says so by type (OutOfData)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(packed)
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return BodyFault.TRUNCATED
    except Exception:  # anything else: not msgpack as Salt writes it
        pass
    return BodyFault.NOT_MSGPACK


def encode_body(tag: str, data: Any) -> bytes:
    return tag.encode("utf-8") + TAGEND + msgpack.packb(data, use_bin_type=True)


def encode_pub_message(tag: str, data: Any) -> bytes:
    """One message as the publisher socket carries it (for tests and tools)."""
    return msgpack.packb({"head": {}, "body": encode_body(tag, data)}, use_bin_type=True)


def encode_pull_message(tag: str, data: Any) -> bytes:
    """One length-prefixed message for ``master_event_pull.ipc`` (fires an event)."""
    payload = encode_pub_message(tag, data)
    return _LENGTH.pack(len(payload)) + payload
